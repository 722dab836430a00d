import { z } from 'zod';
import { KdnError } from '../../common/errors.ts';
import { KnowledgeSchema, MAX_QUESTION_CHARS, NOT_PRINTABLE, isPrintable, maxTokens, temperature } from './schemas.ts';

/**
 * Request bodies of the OpenAI-compatible routes. Every field the OpenAI API defines is either honoured or refused
 * with a 400 naming it (rejectUnsupported); unknown fields are refused too, so no option is silently ignored.
 */

const stop = z.union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).max(4)]);

const common = {
  /** Absent means the one model kdn serves; another name is a 404 model_not_found. */
  model: z.string().max(256).optional(),
  max_tokens: maxTokens.nullish(),
  temperature: temperature.nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.number().int().min(0).nullish(),
  n: z.literal(1).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).strict().nullish(),
  stop: stop.nullish(),
  /** An end-user id for the caller's own bookkeeping; it does not change the answer. */
  user: z.string().max(256).refine(isPrintable, NOT_PRINTABLE).optional(),
  kdn: KnowledgeSchema.optional(),
};

const TextPart = z.object({ type: z.literal('text'), text: z.string().max(MAX_QUESTION_CHARS) }).strict();

/** Message content: a string, or an array of text parts (other part types are refused with a hint). */
const Content = z.union([z.string().max(MAX_QUESTION_CHARS), z.array(TextPart).min(1).max(64)]);

const Message = z
  .object({
    role: z.enum(['system', 'developer', 'user', 'assistant']),
    content: Content,
    name: z.string().max(64).refine(isPrintable, NOT_PRINTABLE).optional(),
  })
  .strict();

export const ChatCompletionSchema = z
  .object({
    messages: z.array(Message).min(1).max(64),
    max_completion_tokens: maxTokens.nullish(),
    ...common,
  })
  .strict();
export type ChatCompletionBody = z.output<typeof ChatCompletionSchema>;
export type ChatMessageBody = ChatCompletionBody['messages'][number];

export const CompletionSchema = z
  .object({
    // One prompt, as a string or an array of one string: several prompts would need a choice per prompt.
    prompt: z.union([z.string().min(1).max(MAX_QUESTION_CHARS), z.tuple([z.string().min(1).max(MAX_QUESTION_CHARS)])]),
    ...common,
  })
  .strict();
export type CompletionBody = z.output<typeof CompletionSchema>;

interface Unsupported {
  /** Values that ask for nothing beyond what kdn does anyway, so they are accepted. */
  neutral: (value: unknown) => boolean;
  hint: string;
}

const isFalse = (v: unknown): boolean => v === false;
const isZero = (v: unknown): boolean => v === 0;
const never = (): boolean => false;
const TOOLS_HINT =
  'kdn does not call tools or functions; remove tools/tool_choice/functions and put what the model needs in the messages or in kdn.documents';

const UNSUPPORTED: Record<string, Unsupported> = {
  tools: { neutral: (v) => Array.isArray(v) && v.length === 0, hint: TOOLS_HINT },
  tool_choice: { neutral: (v) => v === 'none', hint: TOOLS_HINT },
  parallel_tool_calls: { neutral: () => true, hint: TOOLS_HINT },
  functions: { neutral: (v) => Array.isArray(v) && v.length === 0, hint: TOOLS_HINT },
  function_call: { neutral: (v) => v === 'none', hint: TOOLS_HINT },
  response_format: {
    neutral: (v) => typeof v === 'object' && v !== null && (v as { type?: unknown }).type === 'text',
    hint: 'kdn generates plain text only; remove response_format (or send {"type": "text"}) and ask for the format in the prompt',
  },
  logprobs: { neutral: (v) => v === false || v === 0, hint: 'kdn does not return log probabilities; remove logprobs' },
  top_logprobs: { neutral: isZero, hint: 'kdn does not return log probabilities; remove top_logprobs' },
  logit_bias: {
    neutral: (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0,
    hint: 'kdn does not bias logits; remove logit_bias',
  },
  presence_penalty: { neutral: isZero, hint: 'kdn applies no repetition penalties; remove presence_penalty' },
  frequency_penalty: { neutral: isZero, hint: 'kdn applies no repetition penalties; remove frequency_penalty' },
  best_of: { neutral: (v) => v === 1, hint: 'kdn returns one completion; remove best_of' },
  echo: { neutral: isFalse, hint: 'kdn does not echo the prompt; remove echo' },
  suffix: { neutral: never, hint: 'kdn does not insert text before a suffix; remove suffix' },
  store: { neutral: isFalse, hint: 'kdn does not store completions; remove store' },
  metadata: { neutral: never, hint: 'kdn does not store completions, so it takes no metadata; remove it' },
  modalities: { neutral: (v) => Array.isArray(v) && v.every((m) => m === 'text'), hint: 'kdn generates text only; remove modalities' },
  audio: { neutral: never, hint: 'kdn generates text only; remove audio' },
  prediction: { neutral: never, hint: 'kdn does not take predicted outputs; remove prediction' },
  reasoning_effort: { neutral: never, hint: 'the served model has no reasoning modes; remove reasoning_effort' },
  service_tier: { neutral: (v) => v === 'auto' || v === 'default', hint: 'kdn has one service tier; remove service_tier' },
  web_search_options: { neutral: never, hint: 'kdn does not search the web; put the knowledge in kdn.documents instead' },
};

/**
 * Refuses OpenAI options kdn does not implement (400 with the field as `param`), so a client never gets an answer
 * that silently ignored what it asked for. Returns the body without the neutral ones, for the schema.
 */
export function rejectUnsupported(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const rest: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(body)) {
    const rule = UNSUPPORTED[field];
    if (!rule) {
      rest[field] = value;
      continue;
    }
    if (value === null || value === undefined || rule.neutral(value)) continue;
    throw new KdnError('INVALID_ARGUMENT', `${field} is not supported by kdn`, { hint: rule.hint, details: { param: field } });
  }
  if (typeof rest.n === 'number' && rest.n !== 1) {
    throw new KdnError('INVALID_ARGUMENT', `n = ${rest.n} is not supported: kdn returns one choice per request`, {
      hint: 'send n: 1 (or leave it out) and repeat the request, with a different seed, for more answers',
      details: { param: 'n' },
    });
  }
  return rest;
}

/** The text of a message's content: a string, or its text parts joined by newlines. */
export function contentText(content: ChatMessageBody['content']): string {
  return typeof content === 'string' ? content : content.map((part) => part.text).join('\n');
}

/** A hint for a message the schema refused, when the reason is a known OpenAI feature kdn lacks. */
export function messageHint(body: unknown): string | undefined {
  const messages = (body as { messages?: unknown } | null)?.messages;
  if (!Array.isArray(messages)) return undefined;
  for (const m of messages as { role?: unknown; content?: unknown }[]) {
    if (m?.role === 'tool' || m?.role === 'function')
      return `messages with role "${String(m.role)}" need tool calls, which kdn does not make; send system, developer, user and assistant messages`;
    if (Array.isArray(m?.content) && m.content.some((p: { type?: unknown }) => p?.type !== 'text')) {
      return 'kdn reads text only: send content as a string or as parts of {"type": "text", "text": "..."}';
    }
  }
  return undefined;
}
