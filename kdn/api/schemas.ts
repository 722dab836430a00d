import { z } from 'zod';
import { hasControlCharacters } from '../../common/control-characters.ts';
import { DEFAULT_NAMESPACE, NamespaceSchema } from '../namespace.ts';
import { MAX_DOCUMENTS_PER_QUERY, MAX_TOP_K } from '../query/context-plan.ts';

const namespace = NamespaceSchema.default(DEFAULT_NAMESPACE);

/** Names kdn stores or echoes back (titles, document references, end-user ids) are printed on other users' terminals. */
export const isPrintable = (s: string): boolean => !hasControlCharacters(s);
export const NOT_PRINTABLE = 'must not contain control characters (escape sequences, NUL, CR, LF, tab)';

const title = z.string().trim().min(1).max(512).refine(isPrintable, NOT_PRINTABLE);
const docRef = z.string().min(1).max(512).refine(isPrintable, NOT_PRINTABLE);
export const maxTokens = z.number().int().min(1).max(4096);
export const temperature = z.number().min(0).max(2);

export const MAX_QUESTION_CHARS = 8000;

/** POST /v1/documents as JSON (multipart carries the same fields, text as a file). */
export const UploadSchema = z
  .object({
    namespace,
    title,
    text: z
      .string()
      .min(1)
      .refine((text) => text.trim() !== '', 'is only whitespace'),
  })
  .strict();

/** Hints for an upload's fields. */
export const UPLOAD_HINTS: Readonly<Record<string, string>> = {
  title: 'titles are shown on terminals, so they hold printable characters only: remove escape sequences, NUL, CR, LF and tabs',
  text: 'a document of whitespace alone has nothing to retrieve or answer from; send its text',
};

export const NamespaceQuerySchema = z.object({ namespace }).strict();

export const QueryModeSchema = z.enum(['inject', 'recompute', 'blend']);

/** Hints for the fields whose valid values a message alone does not explain. */
export const FIELD_HINTS: Readonly<Record<string, string>> = {
  blendRatio:
    'blendRatio is the share of context tokens a blend (mode "blend") recomputes, from 0 (none) to 1 (all), 0.15 by default; with another mode, leave it out',
  ttftTargetMs:
    'ttftTargetMs is the time to first token, in whole milliseconds from 1 to 600000, that picks the stored level of the chunks (the smaller, the smaller and lossier the objects)',
};

/** The knowledge a query uses: named documents (in order), or top-k retrieval when none are named. */
const KnowledgeFields = {
  namespace,
  documents: z.array(docRef).min(1).max(MAX_DOCUMENTS_PER_QUERY).optional(),
  topK: z.number().int().min(1).max(MAX_TOP_K).default(4),
  mode: QueryModeSchema.default('inject'),
  /** With mode 'blend': the share of context tokens to recompute (kdn/query/blend-policy.ts has the default). */
  blendRatio: z.number().min(0).max(1).optional(),
  /** Time to first token the chunks' stored level is picked for (kdn/query/level-policy.ts), over the server's default. */
  ttftTargetMs: z.number().int().min(1).max(600_000).optional(),
};

/** A blendRatio with another mode would be ignored, and nothing a client sends is ignored silently. */
function blendRatioNeedsBlend(value: { mode: string; blendRatio?: number | undefined }, ctx: z.RefinementCtx): void {
  if (value.blendRatio === undefined || value.mode === 'blend') return;
  ctx.addIssue({ code: 'custom', path: ['blendRatio'], message: `blendRatio applies only to mode "blend", not "${value.mode}"` });
}

export const QuerySchema = z
  .object({
    question: z.string().trim().min(1).max(MAX_QUESTION_CHARS),
    ...KnowledgeFields,
    maxTokens: maxTokens.default(64),
    temperature: temperature.default(0),
    seed: z.number().int().min(0).optional(),
    /** Server-sent events: a `token` event per piece of text as it is generated, then one `result` event. */
    stream: z.boolean().default(false),
  })
  .strict()
  .superRefine(blendRatioNeedsBlend);
export type QueryBody = z.output<typeof QuerySchema>;

/** The `kdn` extension field of the OpenAI-compatible routes; absent means no knowledge. */
export const KnowledgeSchema = z.object(KnowledgeFields).strict().superRefine(blendRatioNeedsBlend);
export type Knowledge = z.output<typeof KnowledgeSchema>;

/** POST /v1/warm: which documents' objects the warmer should place at the edges. */
export const WarmPlanSchema = z.object({ namespace, documents: z.array(docRef).min(1).max(1000).optional() }).strict();

/** GET /v1/jobs filters. */
export const JobListSchema = z
  .object({
    status: z.enum(['queued', 'running', 'done', 'failed', 'cancelled']).optional(),
    kind: z.enum(['ingest', 'query']).optional(),
  })
  .strict();

/** A job id as kdn hands them out (GET|DELETE /v1/jobs/:id). */
export const JobIdSchema = z.string().regex(/^[0-9a-f]{16}$/, 'a job id is 16 hex digits');
