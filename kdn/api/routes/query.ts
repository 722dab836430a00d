import express, { type Request, type Response, type Router } from 'express';
import { toKdnError } from '../../../common/errors.ts';
import type { GeneratedToken } from '../../../engine-adapter/types.ts';
import { principalOf } from '../../auth/authenticate.ts';
import { ANSWER_STOP_STRINGS, questionPrompt } from '../../query/prompt.ts';
import type { QueryOutcome } from '../../query/run-query.ts';
import { FIELD_HINTS, QuerySchema } from '../schemas.ts';
import type { KdnServices } from '../services.ts';
import { validate } from '../validate.ts';

/**
 * POST /v1/query: answer a question from named documents or retrieved chunks, with timings and cache tiers. With
 * `stream: true` the answer comes as server-sent events: `token` ({text}) as each piece is generated, then `result`
 * (the whole response, as without stream) or `error` ({error}).
 */
export function queryRoutes(services: KdnServices): Router {
  const router = express.Router();
  router.post('/v1/query', express.json({ limit: '256kb' }), async (req: Request, res: Response) => {
    const body = validate(QuerySchema, req.body, 'query', FIELD_HINTS);
    // A client that goes away takes its query out of the engine's queue (or stops its generation).
    const disconnected = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) disconnected.abort();
    });
    const run = (onToken?: (token: GeneratedToken) => void): Promise<QueryOutcome> =>
      services.queries.answer({
        tenant: principalOf(res).tenant,
        knowledge: { namespace: services.access.tenancy.scope(principalOf(res).tenant, body.namespace, 'read'), topK: body.topK, ...(body.documents ? { documents: body.documents } : {}) },
        searchText: body.question,
        promptText: questionPrompt(body.question),
        mode: body.mode,
        ...(body.blendRatio === undefined ? {} : { blendRatio: body.blendRatio }),
        maxTokens: body.maxTokens,
        temperature: body.temperature,
        ...(body.seed === undefined ? {} : { seed: body.seed }),
        stopStrings: ANSWER_STOP_STRINGS,
        signal: disconnected.signal,
        ...(onToken ? { onToken } : {}),
      });
    const response = (outcome: QueryOutcome): unknown => ({ question: body.question, namespace: body.namespace, ...outcome, answer: outcome.answer.trim() });
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
  });
  return router;
}
