import express, { type Request, type Response, type Router } from 'express';
import { signEdgeToken } from '../../../common/edge-token.ts';
import { principalOf } from '../../auth/authenticate.ts';
import { codecToString } from '../../../storage/kv-object/index.ts';
import { manifestObjects, type Manifest } from '../../manifest.ts';
import { WarmPlanSchema } from '../schemas.ts';
import type { KdnServices } from '../services.ts';
import { validate } from '../validate.ts';

/** Lifetime of the /warm token in a warm plan: long enough for a large warm, which sends a request per 1000 keys. */
const WARM_TOKEN_TTL_S = 600;

/**
 * Operations: GET /healthz, GET /metrics (Prometheus text), GET /v1/status, and POST /v1/warm/plan, which tells the
 * warmer (`kdn warm`) the edges and the chunk objects of a namespace or of some documents; the warmer then drives
 * the edges' /warm itself, with the edge token the plan carries.
 */
export function opsRoutes(services: KdnServices): Router {
  const router = express.Router();

  router.get('/healthz', (_req: Request, res: Response) => {
    res.json({ status: 'ok' });
  });

  router.get('/metrics', async (_req: Request, res: Response) => {
    res.type(services.metrics.registry.contentType).send(await services.metrics.registry.metrics());
  });

  router.get('/v1/status', (_req: Request, res: Response) => {
    const { engine, config } = services;
    res.json({
      model: engine.info,
      backend: engine.backend,
      device: engine.device,
      codec: codecToString(services.codec),
      chunkTokens: config.chunkTokens,
      origin: services.origin.description,
      edges: services.edges.edges,
      queueDepth: services.scheduler.depth,
    });
  });

  router.post('/v1/warm/plan', express.json({ limit: '256kb' }), async (req: Request, res: Response) => {
    const body = validate(WarmPlanSchema, req.body, 'warm plan request');
    const scoped = services.access.tenancy.scope(principalOf(res).tenant, body.namespace, 'read');
    const manifests: Manifest[] = body.documents
      ? await Promise.all(body.documents.map((d) => services.catalog.resolve(scoped, d)))
      : services.catalog.list(scoped);
    const objects = new Map<string, number>();
    for (const m of manifests) for (const o of manifestObjects(m)) objects.set(o.key, o.bytes);
    res.json({
      namespace: body.namespace,
      edges: services.edges.edges,
      documents: manifests.map((m) => ({ id: m.id, title: m.title })),
      objects: [...objects].map(([key, bytes]) => ({ key, bytes })),
      ...(services.edgeSecret ? { edgeToken: warmToken(services.edgeSecret) } : {}),
    });
  });

  return router;
}

/**
 * A token for POST /warm on any of kdn's edges, so `kdn warm` (which has no edge secret) can drive them. It only
 * lets the holder pull objects it names into the edges, and chunk keys are unguessable without the tenant's salt.
 */
function warmToken(secret: string): { token: string; expiresAt: number } {
  const expiresAt = Math.floor(Date.now() / 1000) + WARM_TOKEN_TTL_S;
  return { token: signEdgeToken(secret, 'POST', '/warm', expiresAt), expiresAt };
}
