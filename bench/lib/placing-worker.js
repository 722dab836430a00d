// Worker entry: workers do not inherit the tsx loader, so register it here, then run the worker.
import { register } from 'tsx/esm/api';

register();
await import('./placing-worker.ts');
