import express, { type Request, type Response, type Router } from 'express';
import { principalOf } from '../../auth/authenticate.ts';
import { ANSWER_STOP_STRINGS, questionPrompt } from '../../query/prompt.ts';
import { QuerySchema } from '../schemas.ts';
import type { KdnServices } from '../services.ts';
import { validate } from '../validate.ts';

/** POST /v1/query: answer a question from named documents or retrieved chunks, with timings and cache tiers. */
export function queryRoutes(services: KdnServices): Router {
  const router = express.Router();
  router.post('/v1/query', express.json({ limit: '256kb' }), async (req: Request, res: Response) => {
    const body = validate(QuerySchema, req.body, 'query');
    // A client that goes away takes its query out of the engine's queue (or stops its generation).
    const gone = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) gone.abort();
    });
    const outcome = await services.queries.answer({
      tenant: principalOf(res).tenant,
      signal: gone.signal,
      knowledge: { namespace: services.access.tenancy.scope(principalOf(res).tenant, body.namespace, 'read'), topK: body.topK, ...(body.documents ? { documents: body.documents } : {}) },
      searchText: body.question,
      promptText: questionPrompt(body.question),
      mode: body.mode,
      maxTokens: body.maxTokens,
      temperature: body.temperature,
      ...(body.seed === undefined ? {} : { seed: body.seed }),
      stopStrings: ANSWER_STOP_STRINGS,
    });
    res.json({ question: body.question, namespace: body.namespace, ...outcome, answer: outcome.answer.trim() });
  });
  return router;
}
