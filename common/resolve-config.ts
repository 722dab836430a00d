import type { z } from 'zod';
import { KdnError } from './errors.ts';

/**
 * Validates a server's settings: each field comes from `input` (flags), else from its environment variable, else
 * from the schema's default; empty strings count as unset. Problems become one INVALID_ARGUMENT naming every field.
 */
export function resolveConfig<S extends z.ZodType>(
  schema: S,
  envNames: Record<string, string>,
  input: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  what: string,
  hint: string,
): z.output<S> {
  const merged: Record<string, unknown> = {};
  for (const [field, variable] of Object.entries(envNames)) {
    const value = input[field] ?? env[variable];
    if (value !== undefined && value !== '') merged[field] = value;
  }
  const parsed = schema.safeParse(merged);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || 'config'}: ${issue.message}`);
    throw new KdnError('INVALID_ARGUMENT', `invalid ${what} configuration: ${problems.join('; ')}`, { hint });
  }
  return parsed.data;
}
