// Worker entry: workers do not inherit the loader the process registered, so register tsx here, then run the worker.
import { register } from 'tsx/esm/api';

register();
await import('./hash-worker.ts');
