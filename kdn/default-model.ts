import { fileURLToPath } from 'node:url';

/** The reader model shipped in models/kdn-reader, found from where KDN is installed rather than the working directory. */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('../models/kdn-reader', import.meta.url));
