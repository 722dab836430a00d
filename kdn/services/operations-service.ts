import type { Registry } from 'prom-client';
import { newNonce, signEdgeToken } from '../../common/edge-token.ts';
import { KdnError } from '../../common/errors.ts';
import type { EdgeClient } from '../../edge/client/client.ts';
import { EDGE_PATHS } from '../../edge/protocol.ts';
import type { Engine } from '../../engine-adapter/types.ts';
import { codecToString } from '../../storage/kv-object/index.ts';
import type { CodecSpec } from '../../storage/kv-object/types.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { RateLimiter } from '../auth/rate-limit.ts';
import type { ChunkSalts } from '../auth/salts.ts';
import { publicName, type Tenancy } from '../auth/tenancy.ts';
import type { Catalog } from '../catalog.ts';
import type { WarmPlan } from '../client/api-client.ts';
import { chunkPrefix } from '../keys.ts';
import { manifestObjects, type Manifest } from '../manifest.ts';
import type { EngineScheduler } from '../scheduler/engine-scheduler.ts';

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

export interface OperationsParts {
  engine: Engine;
  origin: ObjectStore;
  edges: EdgeClient;
  catalog: Catalog;
  scheduler: EngineScheduler;
  codec: CodecSpec;
  chunkTokens: number;
  registry: Registry;
  /** GET /metrics needs no operator key. */
  metricsPublic: boolean;
  tenancy: Tenancy;
  salts: ChunkSalts;
  /** The secret edge requests are signed with (undefined: the edges run without auth). */
  edgeSecret: string | undefined;
}

interface Usage {
  documents: number;
  tokens: number;
  /** Stored chunk KV bytes. */
  bytes: number;
}

/**
 * What operators and the warmer ask of the server as a whole: readiness, metrics, status, a tenant's usage, and warm
 * plans (the edges and chunk objects of a namespace, which `kdn warm` then places at the edges itself).
 */
export class OperationsService {
  private readonly warmPlans = new RateLimiter(WARM_PLAN_RATE);

  constructor(private readonly parts: OperationsParts) {}

  get metricsPublic(): boolean {
    return this.parts.metricsPublic;
  }

  /**
   * Ready once the engine is loaded (it is before kdn listens) and the origin answers; a failed check throws the
   * origin's error (ORIGIN_UNAVAILABLE, ORIGIN_TIMEOUT, ...) so a load balancer stops sending queries here.
   */
  async ready(): Promise<unknown> {
    const { origin, engine } = this.parts;
    await origin.head(READY_PROBE_KEY);
    return { status: 'ready', engine: { backend: engine.backend, model: engine.info.path }, origin: origin.description };
  }

  async metrics(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.parts.registry.contentType, text: await this.parts.registry.metrics() };
  }

  status(): unknown {
    const { engine, origin, edges, scheduler, codec, chunkTokens } = this.parts;
    return {
      model: engine.info,
      backend: engine.backend,
      device: engine.device,
      codec: codecToString(codec),
      chunkTokens,
      origin: origin.description,
      edges: edges.edges,
      queueDepth: scheduler.depth,
    };
  }

  /**
   * What a tenant holds, as its quota counts it (upload admission): the documents it uploaded, shared namespaces
   * included, their tokens and stored KV bytes, in all and per namespace.
   */
  usage(tenant: string): Usage & { tenant: string; namespaces: Record<string, Usage> } {
    const total: Usage = { documents: 0, tokens: 0, bytes: 0 };
    const namespaces: Record<string, Usage> = {};
    for (const m of this.parts.catalog.uploadedBy(tenant)) {
      const name = publicName(m.namespace);
      namespaces[name] ??= { documents: 0, tokens: 0, bytes: 0 };
      const ns = namespaces[name];
      for (const usage of [total, ns]) {
        usage.documents += 1;
        usage.tokens += m.tokens;
        usage.bytes += m.bytes;
      }
    }
    return { tenant, ...total, namespaces };
  }

  /** The edges and the chunk objects of a namespace or of some of its documents, with a /warm token scoped to them. */
  async warmPlan(tenant: string, request: { namespace: string; documents?: string[] }): Promise<WarmPlan> {
    const { catalog, edges, tenancy, salts, edgeSecret } = this.parts;
    const waitS = this.warmPlans.take(tenant);
    if (waitS > 0) {
      throw new KdnError('RATE_LIMITED', 'too many warm plans for this tenant', {
        hint: 'wait for Retry-After seconds; a plan covers a whole namespace',
        details: { retryAfterS: Math.max(1, Math.ceil(waitS)) },
      });
    }
    const scoped = tenancy.scope(tenant, request.namespace, 'read');
    const manifests: Manifest[] = request.documents
      ? await Promise.all(request.documents.map((d) => catalog.resolve(scoped, d)))
      : catalog.list(scoped);
    const objects = new Map<string, number>();
    for (const m of manifests) for (const o of manifestObjects(m)) objects.set(o.key, o.bytes);
    if (objects.size > MAX_WARM_PLAN_OBJECTS) {
      throw new KdnError('PAYLOAD_TOO_LARGE', `the plan would name ${objects.size} objects, more than ${MAX_WARM_PLAN_OBJECTS}`, {
        hint: 'warm a few documents at a time (kdn warm --doc ...)',
      });
    }
    return {
      namespace: request.namespace,
      edges: [...edges.edges],
      documents: manifests.map((m) => ({ id: m.id, title: m.title })),
      objects: [...objects].map(([key, bytes]) => ({ key, bytes })),
      ...(edgeSecret ? { edgeToken: warmToken(edgeSecret, chunkPrefix(salts.saltFor(scoped))) } : {}),
    };
  }
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
