import { z } from 'zod';

/** Namespace names: lower-case, safe as one object-key segment and in URLs. */
export const NamespaceSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'namespace must be 1-63 characters of a-z, 0-9, ".", "_", "-", starting with a letter or digit');

export const DEFAULT_NAMESPACE = 'default';
