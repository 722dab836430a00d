import type { z } from 'zod';
import { KdnError } from '../../common/errors.ts';

/**
 * Parses request input with a zod schema; failures become INVALID_ARGUMENT (400) naming each bad field, with the
 * hint `hints` gives for the first bad field it knows (by the field's own name, wherever it is nested). Schemas are
 * strict, so a misspelt field is refused by name rather than ignored.
 */
export function validate<S extends z.ZodType>(
  schema: S,
  value: unknown,
  what: string,
  hints: Readonly<Record<string, string>> = {},
): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.slice(0, 5).map((issue) => `${issue.path.join('.') || what}: ${issue.message}`);
  const hint = parsed.error.issues.map((issue) => hintFor(issue, hints)).find((h) => h !== undefined);
  throw new KdnError('INVALID_ARGUMENT', `invalid ${what}: ${problems.join('; ')}`, {
    ...(hint ? { hint } : {}),
    details: { issues: parsed.error.issues.slice(0, 20).map((i) => ({ path: i.path.map(String), message: i.message })) },
  });
}

function hintFor(issue: z.core.$ZodIssue, hints: Readonly<Record<string, string>>): string | undefined {
  if (issue.code === 'unrecognized_keys') {
    return `remove ${issue.keys.map((k) => `"${k}"`).join(', ')}: kdn refuses fields it does not know rather than ignore them (field names are case-sensitive)`;
  }
  return hints[String(issue.path.at(-1))];
}
