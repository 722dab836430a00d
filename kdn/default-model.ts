import { fileURLToPath } from 'node:url';

/** The demo model shipped in models/kdn-demo, found from where KDN is installed rather than the working directory. */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('../models/kdn-demo', import.meta.url));
