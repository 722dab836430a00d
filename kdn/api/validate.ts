import type { z } from 'zod';
import { KdnError } from '../../common/errors.ts';

/** Parses request input with a zod schema; failures become INVALID_ARGUMENT (400) naming each bad field. */
export function validate<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.slice(0, 5).map((issue) => `${issue.path.join('.') || what}: ${issue.message}`);
  throw new KdnError('INVALID_ARGUMENT', `invalid ${what}: ${problems.join('; ')}`, {
    details: { issues: parsed.error.issues.slice(0, 20).map((i) => ({ path: i.path.map(String), message: i.message })) },
  });
}
