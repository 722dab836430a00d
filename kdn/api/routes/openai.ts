import { randomBytes } from 'node:crypto';
import express, { type Request, type Response } from 'express';
import type { z } from 'zod';
import { KdnError, toKdnError } from '../../../common/errors.ts';
import type { ChatMessage, GeneratedToken } from '../../../engine-adapter/types.ts';
import { principalOf } from '../../auth/authenticate.ts';
import type { QueryOutcome } from '../../query/run-query.ts';
import type { AnswerService, GenerationInput } from '../../services/answer-service.ts';
import type { RouteHandlers } from '../mount-routes.ts';
import { openAIErrorBody } from '../openai-errors.ts';
import { ChatCompletionSchema, CompletionSchema, contentText, messageHint, rejectUnsupported } from '../openai-schemas.ts';
import { FIELD_HINTS, type Knowledge } from '../schemas.ts';
import { validate } from '../validate.ts';

const DEFAULT_MAX_TOKENS = 64;

/**
 * OpenAI-compatible routes. Knowledge rides in an extra `kdn` field ({namespace, documents?, topK?, mode?, blendRatio?, ttftTargetMs?}); without
 * it the model answers from the prompt alone. `stream: true` answers server-sent events ending in `data: [DONE]`.
 * Errors on these paths are rendered in OpenAI's shape by app.ts (openai-errors.ts).
 */
export function openAIHandlers(queries: AnswerService): RouteHandlers<'openai'> {
  const { modelId } = queries;
  const json = express.json({ limit: '256kb' });
  const model = { id: modelId, object: 'model', created: 0, owned_by: 'kdn' };
  const checkModel = (name: string | undefined): void => {
    if (name === undefined || name === modelId) return;
    throw new KdnError('NOT_FOUND', `The model "${name}" does not exist`, {
      hint: `this kdn serves one model, "${modelId}" (GET /v1/models); send that as model, or leave model out`,
      details: { param: 'model', openaiCode: 'model_not_found' },
    });
  };

  return {
    models: (_req: Request, res: Response) => {
      res.json({ object: 'list', data: [model] });
    },

    model: (req: Request, res: Response) => {
      checkModel(String(req.params.id));
      res.json(model);
    },

    chat: [
      json,
      async (req: Request, res: Response) => {
        const body = parse(ChatCompletionSchema, req.body, 'chat completion request');
        checkModel(body.model);
        // Chat templates know system, user and assistant; OpenAI's developer role is its newer name for system.
        const messages: ChatMessage[] = body.messages.map((m) => ({
          role: m.role === 'developer' ? 'system' : m.role,
          content: contentText(m.content),
        }));
        await complete(queries, res, {
          prompt: { chat: messages },
          model: modelId,
          knowledge: body.kdn,
          maxTokens: body.max_completion_tokens ?? body.max_tokens ?? DEFAULT_MAX_TOKENS,
          ...sampling(body),
        });
      },
    ],

    completion: [
      json,
      async (req: Request, res: Response) => {
        const body = parse(CompletionSchema, req.body, 'completion request');
        checkModel(body.model);
        await complete(queries, res, {
          prompt: { text: typeof body.prompt === 'string' ? body.prompt : body.prompt[0]! },
          model: modelId,
          knowledge: body.kdn,
          maxTokens: body.max_tokens ?? DEFAULT_MAX_TOKENS,
          ...sampling(body),
        });
      },
    ],
  };
}

type CommonBody = Pick<z.output<typeof CompletionSchema>, 'temperature' | 'top_p' | 'seed' | 'stop' | 'stream' | 'stream_options'>;

function sampling(body: CommonBody): Pick<Completion, 'temperature' | 'topP' | 'seed' | 'stop' | 'stream' | 'includeUsage'> {
  if (body.stream_options && !body.stream) {
    throw new KdnError('INVALID_ARGUMENT', 'stream_options is only allowed with stream: true', {
      hint: 'send stream: true, or leave stream_options out (a whole answer always carries its usage)',
      details: { param: 'stream_options' },
    });
  }
  return {
    temperature: body.temperature ?? 0,
    topP: body.top_p ?? 1,
    seed: body.seed ?? undefined,
    stop: body.stop ?? undefined,
    stream: body.stream ?? false,
    includeUsage: body.stream_options?.include_usage ?? false,
  };
}

/** Validates an OpenAI body: unsupported options first (each with its own hint), then the schema. */
function parse<S extends z.ZodType>(schema: S, body: unknown, what: string): z.output<S> {
  const supported = rejectUnsupported(body);
  try {
    return validate(schema, supported, what, FIELD_HINTS);
  } catch (err) {
    const hint = messageHint(body);
    if (!(err instanceof KdnError) || hint === undefined) throw err;
    throw new KdnError(err.code, err.message, { hint, ...(err.details ? { details: err.details } : {}) });
  }
}

interface Completion {
  /** A chat (in the model's template) or a raw text prompt. */
  prompt: { chat: ChatMessage[] } | { text: string };
  model: string;
  knowledge: Knowledge | undefined;
  maxTokens: number;
  temperature: number;
  topP: number;
  seed: number | undefined;
  stop: string | string[] | undefined;
  stream: boolean;
  /** stream_options.include_usage: a last chunk with no choices carries the usage. */
  includeUsage: boolean;
}

/** What every body and chunk of one completion's response carries. */
interface CompletionHead {
  id: string;
  created: number;
  model: string;
  chat: boolean;
}

type RunCompletion = (onToken?: (token: GeneratedToken) => void) => Promise<QueryOutcome>;

async function complete(queries: AnswerService, res: Response, c: Completion): Promise<void> {
  const chat = 'chat' in c.prompt;
  const head = {
    id: `${chat ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`,
    created: Math.floor(Date.now() / 1000),
    model: c.model,
    chat,
  };
  const disconnected = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) disconnected.abort();
  });
  const generation: GenerationInput = {
    maxTokens: c.maxTokens,
    temperature: c.temperature,
    topP: c.topP,
    ...(c.seed === undefined ? {} : { seed: c.seed }),
    stopStrings: c.stop === undefined ? [] : [c.stop].flat(),
    signal: disconnected.signal,
  };
  const tenant = principalOf(res).tenant;
  const run: RunCompletion = (onToken) => {
    const g = { ...generation, ...(onToken ? { onToken } : {}) };
    return 'chat' in c.prompt
      ? queries.chat(tenant, c.prompt.chat, c.knowledge, g)
      : queries.complete(tenant, c.prompt.text, c.knowledge, g);
  };
  if (c.stream) await streamCompletion(res, head, c.includeUsage, run);
  else sendCompletion(res, head, await run());
}

function sendCompletion(res: Response, head: CompletionHead, outcome: QueryOutcome): void {
  const { id, created, model, chat } = head;
  const choice = chat
    ? { index: 0, message: { role: 'assistant', content: outcome.answer }, finish_reason: finishReason(outcome) }
    : { index: 0, text: outcome.answer, logprobs: null, finish_reason: finishReason(outcome) };
  const object = chat ? 'chat.completion' : 'text_completion';
  res.json({ id, object, created, model, choices: [choice], usage: usage(outcome), kdn: kdnExtras(outcome) });
}

/**
 * The completion as server-sent events, a chunk per token. The stream opens with the first token, so a request that
 * fails before it (unknown document, bad namespace) still gets its proper HTTP status from the error handler; a
 * failure after that is sent as an error event.
 */
async function streamCompletion(res: Response, head: CompletionHead, includeUsage: boolean, run: RunCompletion): Promise<void> {
  const { id, created, model, chat } = head;
  let opened = false;
  const object = chat ? 'chat.completion.chunk' : 'text_completion';
  const send = (payload: unknown): void => {
    if (!opened) {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
      opened = true;
    }
    res.write(`data: ${JSON.stringify(payload)}\n\n`);
  };
  const delta = (text: string, first: boolean): unknown =>
    chat
      ? { index: 0, delta: first ? { role: 'assistant', content: text } : { content: text }, finish_reason: null }
      : { index: 0, text, logprobs: null, finish_reason: null };
  let first = true;
  try {
    const outcome = await run((token) => {
      if (token.text === '' && !first) return;
      send({ id, object, created, model, choices: [delta(token.text, first)] });
      first = false;
    });
    const last = chat
      ? { index: 0, delta: {}, finish_reason: finishReason(outcome) }
      : { index: 0, text: '', logprobs: null, finish_reason: finishReason(outcome) };
    send({ id, object, created, model, choices: [last], kdn: kdnExtras(outcome) });
    if (includeUsage) send({ id, object, created, model, choices: [], usage: usage(outcome) });
  } catch (err) {
    if (!opened) throw err;
    send(openAIErrorBody(toKdnError(err)));
  }
  res.end('data: [DONE]\n\n');
}

function finishReason(outcome: QueryOutcome): 'stop' | 'length' {
  return outcome.finishReason === 'length' ? 'length' : 'stop';
}

function usage(outcome: QueryOutcome): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  const prompt = 1 + outcome.tokens.context + outcome.tokens.prompt;
  return { prompt_tokens: prompt, completion_tokens: outcome.tokens.generated, total_tokens: prompt + outcome.tokens.generated };
}

function kdnExtras(outcome: QueryOutcome): unknown {
  const { chunks, level, tokens, bytes, timings, mode } = outcome;
  return { mode, chunks, level, tokens, bytes, timings };
}
