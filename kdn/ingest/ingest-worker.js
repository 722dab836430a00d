// Worker entry: workers do not inherit the loader bin/kdn.js registered, so register tsx here, then run the worker.
import { register } from 'tsx/esm/api';

register();
await import('./ingest-worker.ts');
