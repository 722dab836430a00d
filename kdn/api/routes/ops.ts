import express, { type Request, type Response, type Router } from 'express';
import { newNonce, signEdgeToken } from '../../../common/edge-token.ts';
import { KdnError } from '../../../common/errors.ts';
import { EDGE_PATHS } from '../../../edge/protocol.ts';
import { RateLimiter } from '../../auth/rate-limit.ts';
import { chunkPrefix } from '../../keys.ts';
import { principalOf, requireOperator } from '../../auth/authenticate.ts';
import { publicName } from '../../auth/tenancy.ts';
import { codecToString } from '../../../storage/kv-object/index.ts';
import { manifestObjects, type Manifest } from '../../manifest.ts';
import { WarmPlanSchema } from '../schemas.ts';
import type { KdnServices } from '../services.ts';
import { validate } from '../validate.ts';

/** A key no object has: a head() of it asks the origin to answer without reading data. */
const READY_PROBE_KEY = 'readyz-probe';

/**
 * Lifetime of the /warm token in a warm plan: `kdn warm` sends all its requests (one per 1000 keys per edge) at
 * once, and only a failover round comes later.
 */
const WARM_TOKEN_TTL_S = 60;
/** Warm plans per tenant: each makes edges fetch up to a namespace's worth of objects from the origin. */
const WARM_PLAN_RATE = { perSecond: 0.2, burst: 5 };
/** Most objects one warm plan names; larger namespaces are warmed a few documents at a time. */
const MAX_WARM_PLAN_OBJECTS = 100_000;

/**
 * Operations: GET /healthz (liveness), GET /readyz (readiness), GET /metrics (Prometheus text) and GET /v1/status
 * (both for operator keys: they describe the whole server), GET /v1/usage (the caller's own tenant), and POST
 * /v1/warm/plan, which tells the warmer (`kdn warm`) the edges and the chunk objects of a namespace or of some
 * documents; the warmer then drives the edges' /warm itself, with the edge token the plan carries.
 */
export function opsRoutes(services: KdnServices): Router {
  const router = express.Router();
  const warmPlans = new RateLimiter(WARM_PLAN_RATE);

  router.get('/healthz', (_req: Request, res: Response) => {
    res.json({ status: 'ok' });
  });

  // Readiness: the engine is loaded (it is before kdn listens) and the origin answers; a failed check answers its
  // error's status (ORIGIN_UNAVAILABLE 502, ORIGIN_TIMEOUT 504, ...) so a load balancer stops sending queries here.
  router.get('/readyz', async (_req: Request, res: Response) => {
    await services.origin.head(READY_PROBE_KEY);
    res.json({ status: 'ready', engine: { backend: services.engine.backend, model: services.engine.info.path }, origin: services.origin.description });
  });

  router.get('/metrics', async (_req: Request, res: Response) => {
    if (!services.access.metricsPublic) requireOperator(res);
    res.type(services.metrics.registry.contentType).send(await services.metrics.registry.metrics());
  });

  router.get('/v1/status', (_req: Request, res: Response) => {
    requireOperator(res);
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

  router.get('/v1/usage', (_req: Request, res: Response) => {
    const { tenant } = principalOf(res);
    res.json(tenantUsage(tenant, services.catalog.ownedBy(tenant)));
  });

  router.post('/v1/warm/plan', express.json({ limit: '256kb' }), async (req: Request, res: Response) => {
    const body = validate(WarmPlanSchema, req.body, 'warm plan request');
    const tenant = principalOf(res).tenant;
    const waitS = warmPlans.take(tenant);
    if (waitS > 0) {
      res.setHeader('retry-after', String(Math.max(1, Math.ceil(waitS))));
      throw new KdnError('RATE_LIMITED', 'too many warm plans for this tenant', { hint: 'wait for Retry-After seconds; a plan covers a whole namespace' });
    }
    const scoped = services.access.tenancy.scope(tenant, body.namespace, 'read');
    const manifests: Manifest[] = body.documents
      ? await Promise.all(body.documents.map((d) => services.catalog.resolve(scoped, d)))
      : services.catalog.list(scoped);
    const objects = new Map<string, number>();
    for (const m of manifests) for (const o of manifestObjects(m)) objects.set(o.key, o.bytes);
    if (objects.size > MAX_WARM_PLAN_OBJECTS) {
      throw new KdnError('PAYLOAD_TOO_LARGE', `the plan would name ${objects.size} objects, more than ${MAX_WARM_PLAN_OBJECTS}`, {
        hint: 'warm a few documents at a time (kdn warm --doc ...)',
      });
    }
    res.json({
      namespace: body.namespace,
      edges: services.edges.edges,
      documents: manifests.map((m) => ({ id: m.id, title: m.title })),
      objects: [...objects].map(([key, bytes]) => ({ key, bytes })),
      ...(services.edgeSecret ? { edgeToken: warmToken(services.edgeSecret, chunkPrefix(services.access.salts.saltFor(scoped))) } : {}),
    });
  });

  return router;
}

interface Usage {
  documents: number;
  tokens: number;
  /** Stored chunk KV bytes. */
  bytes: number;
}

/** What a tenant holds: its documents, their tokens and stored KV bytes, in all and per namespace. */
function tenantUsage(tenant: string, manifests: readonly Manifest[]): Usage & { tenant: string; namespaces: Record<string, Usage> } {
  const total: Usage = { documents: 0, tokens: 0, bytes: 0 };
  const namespaces: Record<string, Usage> = {};
  for (const m of manifests) {
    const ns = (namespaces[publicName(m.namespace)] ??= { documents: 0, tokens: 0, bytes: 0 });
    for (const usage of [total, ns]) {
      usage.documents += 1;
      usage.tokens += m.tokens;
      usage.bytes += m.bytes;
    }
  }
  return { tenant, ...total, namespaces };
}

/**
 * A token for POST /warm on any of kdn's edges, so `kdn warm` (which has no edge secret) can drive them. It is
 * scoped to the chunk-key prefix of the namespace's salt: edges warm only keys under it and answer every other key
 * as absent, so the holder learns nothing about objects that are not its own.
 */
function warmToken(secret: string, scope: string): { token: string; expiresAt: number } {
  const expiresAt = Math.floor(Date.now() / 1000) + WARM_TOKEN_TTL_S;
  const token = signEdgeToken(secret, { method: 'POST', target: EDGE_PATHS.warm, expiry: expiresAt, nonce: newNonce(), scope });
  return { token, expiresAt };
}
