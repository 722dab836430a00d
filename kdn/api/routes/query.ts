import express, { type Request, type Response } from 'express';
import { toKdnError } from '../../../common/errors.ts';
import { principalOf } from '../../auth/authenticate.ts';
import type { QueryOutcome } from '../../query/run-query.ts';
import type { AnswerService, GenerationInput } from '../../services/answer-service.ts';
import type { RouteHandlers } from '../mount-routes.ts';
import { FIELD_HINTS, QuerySchema } from '../schemas.ts';
import { validate } from '../validate.ts';

/**
 * A question answered from named documents or retrieved chunks, with timings and cache tiers. With `stream: true`
 * the answer comes as server-sent events: `token` ({text}) as each piece is generated, then `result` (the whole
 * response, as without stream) or `error` ({error}).
 */
export function queryHandlers(queries: AnswerService): RouteHandlers<'query'> {
  return {
    ask: [
      express.json({ limit: '256kb' }),
      async (req: Request, res: Response) => {
        const body = validate(QuerySchema, req.body, 'query', FIELD_HINTS);
        // A client that goes away takes its query out of the engine's queue (or stops its generation).
        const disconnected = new AbortController();
        res.on('close', () => {
          if (!res.writableFinished) disconnected.abort();
        });
        const { namespace, topK, mode } = body;
        const knowledge = {
          namespace,
          topK,
          mode,
          ...(body.documents ? { documents: body.documents } : {}),
          ...(body.blendRatio === undefined ? {} : { blendRatio: body.blendRatio }),
          ...(body.ttftTargetMs === undefined ? {} : { ttftTargetMs: body.ttftTargetMs }),
        };
        const generation: GenerationInput = {
          maxTokens: body.maxTokens,
          temperature: body.temperature,
          signal: disconnected.signal,
          ...(body.seed === undefined ? {} : { seed: body.seed }),
        };
        const run = (onToken?: GenerationInput['onToken']): Promise<QueryOutcome> =>
          queries.ask(principalOf(res).tenant, body.question, knowledge, { ...generation, ...(onToken ? { onToken } : {}) });
        const response = (outcome: QueryOutcome): unknown => ({
          question: body.question,
          namespace,
          ...outcome,
          answer: outcome.answer.trim(),
        });
        if (!body.stream) {
          res.json(response(await run()));
          return;
        }
        // As on the OpenAI routes, the stream opens with the first token, so a failure before it keeps its HTTP status.
        let opened = false;
        const send = (event: string, data: unknown): void => {
          if (!opened) {
            res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
            opened = true;
          }
          res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
        };
        try {
          const outcome = await run((token) => {
            if (token.text !== '') send('token', { text: token.text });
          });
          send('result', response(outcome));
        } catch (err) {
          if (!opened) throw err;
          send('error', toKdnError(err).toJSON());
        }
        res.end();
      },
    ],
  };
}
