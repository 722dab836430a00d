import express, { type Request, type RequestHandler, type Response, type Router } from 'express';
import multer from 'multer';
import { KdnError } from '../../../common/errors.ts';
import { documentId } from '../../keys.ts';
import { principalOf } from '../../auth/authenticate.ts';
import { publicName, tenantOf } from '../../auth/tenancy.ts';
import { checkIngestBounds, estimateIngest, type IngestEstimate } from '../../ingest/ingest-bounds.ts';
import type { TokenizedDocument } from '../../ingest/ingest-thread.ts';
import { checkIsText } from '../../ingest/text-check.ts';
import { manifestObjects, summarize, type DocumentSummary, type Manifest } from '../../manifest.ts';
import { NamespaceQuerySchema, UploadSchema } from '../schemas.ts';
import type { KdnServices } from '../services.ts';
import { validate } from '../validate.ts';
import { publicJob } from './jobs.ts';

/** HEADs to edges at a time when a document's detail asks where its objects are cached. */
const CACHE_CHECK_CONCURRENCY = 8;

/**
 * Knowledge: POST /v1/documents (JSON {namespace, title, text} or multipart with a `file` and optional `title`,
 * `namespace` fields) answers 202 with an ingest job (see ./jobs.ts); GET /v1/documents?namespace=;
 * GET|DELETE /v1/documents/:id?namespace=. Namespaces are the caller's tenant's (or shared ones, see
 * kdn/auth/tenancy.ts): another tenant's documents and jobs are 404, as if they did not exist.
 */
export function documentRoutes(services: KdnServices): Router {
  const router = express.Router();
  const { tenancy } = services.access;
  const limit = services.config.maxUploadBytes;
  const upload = multer({ storage: multer.memoryStorage(), limits: { fileSize: limit, files: 1, fields: 8, fieldSize: 64 * 1024 } });

  router.post('/v1/documents', express.json({ limit: limit + 64 * 1024 }), multipartErrors(upload.single('file')), async (req: Request, res: Response) => {
    const input = validate(UploadSchema, uploadFields(req), 'upload');
    if (Buffer.byteLength(input.text) > limit) {
      throw new KdnError('PAYLOAD_TOO_LARGE', `the document is larger than the ${limit}-byte upload limit`, {
        hint: 'split the document, or raise the limit with kdn serve --max-upload',
      });
    }
    checkIsText(input.text, input.title);
    const tenant = principalOf(res).tenant;
    const scoped = tenancy.scope(tenant, input.namespace, 'write');
    const id = documentId(scoped, input.title, input.text);
    // A document that is already stored costs nothing more: uploading it again only answers its job.
    const bounded = (await services.catalog.find(scoped, id)) ? undefined : await boundIngest(services, tenant, input.text);
    const salt = services.access.salts.saltFor(scoped);
    const job = await services.jobs.submit({ ...input, namespace: scoped, id, salt, ...(bounded ? { tokenized: bounded.tokenized } : {}) }, tenant, bounded?.expected);
    res.status(202).location(`/v1/jobs/${job.id}`).json({ job: publicJob(job), document: { id, namespace: input.namespace, title: input.title } });
  });

  router.get('/v1/documents', (req: Request, res: Response) => {
    const { namespace } = validate(NamespaceQuerySchema, req.query, 'query string');
    const scoped = tenancy.scope(principalOf(res).tenant, namespace, 'read');
    res.json({ namespace, documents: services.catalog.list(scoped).map(publicSummary) });
  });

  router.get('/v1/documents/:id', async (req: Request, res: Response) => {
    const { namespace } = validate(NamespaceQuerySchema, req.query, 'query string');
    const scoped = tenancy.scope(principalOf(res).tenant, namespace, 'read');
    const manifest = await services.catalog.resolve(scoped, String(req.params.id));
    res.json(await describe(services, manifest));
  });

  router.delete('/v1/documents/:id', async (req: Request, res: Response) => {
    const { namespace } = validate(NamespaceQuerySchema, req.query, 'query string');
    const tenant = principalOf(res).tenant;
    // Resolved for reading first, so a document the tenant cannot see is a 404 even in a shared namespace.
    const manifest = await services.catalog.resolve(tenancy.scope(tenant, namespace, 'read'), String(req.params.id));
    tenancy.scope(tenant, namespace, 'write');
    const unused = await services.catalog.unpublish(manifest);
    let purged = 0;
    for (const key of unused) {
      try {
        await services.edges.delete(key);
        purged++;
      } catch (err) {
        services.log.warn({ key, err }, 'could not purge an object at the edges');
      }
      await services.origin.delete(key);
    }
    res.json({ deleted: publicSummary(manifest), objects: { deleted: unused.length, purgedAtEdges: purged, sharedKept: manifestObjects(manifest).length - unused.length } });
  });

  return router;
}

/** Clients see plain namespace names, never the tenant-scoped ones kdn keeps internally. */
function publicSummary(manifest: Manifest): DocumentSummary {
  return { ...summarize(manifest), namespace: publicName(manifest.namespace) };
}

/** Multer passes the form parser's own errors (no closing boundary, no boundary at all) through as plain Errors: they are the client's. */
function multipartErrors(handler: RequestHandler): RequestHandler {
  return (req, res, next) => {
    void handler(req, res, (err?: unknown) => {
      if (err === undefined || err instanceof multer.MulterError || err instanceof KdnError || !(err instanceof Error)) next(err);
      else next(new KdnError('INVALID_ARGUMENT', `bad multipart upload: ${err.message}`, { hint: 'send a well-formed multipart/form-data body with one "file" field' }));
    });
  };
}

/** The upload's fields from a JSON body, or from a multipart form whose file is the text (title defaults to its name). */
function uploadFields(req: Request): unknown {
  const file = req.file;
  if (!file) {
    if (!req.is('application/json')) {
      throw new KdnError('UNSUPPORTED_MEDIA_TYPE', `uploads are JSON or multipart/form-data, not ${req.headers['content-type'] ?? 'an untyped body'}`, {
        hint: 'send {"title": ..., "text": ...} as application/json, or a multipart form with a "file" field',
      });
    }
    return req.body;
  }
  const fields = (req.body ?? {}) as Record<string, unknown>;
  return { ...fields, title: fields.title ?? file.originalname, text: decodeText(file.buffer, file.originalname) };
}

function decodeText(bytes: Buffer, name: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new KdnError('UNSUPPORTED_MEDIA_TYPE', `${name} is not UTF-8 text`, { hint: 'upload plain text or Markdown files' });
  }
}

/**
 * Tokenizes an upload and checks what it would cost against the per-upload limits and the tenant's quota (what
 * it stores plus its uploads still running), before the engine spends anything on it.
 */
async function boundIngest(services: KdnServices, tenant: string, text: string): Promise<{ tokenized: TokenizedDocument; expected: IngestEstimate }> {
  const { engine, config } = services;
  const tokenized = await services.jobs.tokenize(text);
  const chunkLengths = tokenized.chunks.map((chunk) => chunk.tokenIds.length);
  const expected = estimateIngest(engine.info, services.codec, chunkLengths);
  const held = { tokens: 0, kvBytes: 0 };
  for (const m of services.catalog.ownedBy(tenant)) {
    held.tokens += m.tokens;
    held.kvBytes += m.bytes;
  }
  for (const job of services.jobs.unfinished((j) => tenantOf(j.document.namespace) === tenant)) {
    held.tokens += job.expected?.tokens ?? 0;
    held.kvBytes += job.expected?.kvBytes ?? 0;
  }
  checkIngestBounds({
    maxUploadTokens: config.maxUploadTokens, maxUploadKvBytes: config.maxUploadKvBytes,
    tenantTokens: config.tenantQuotaTokens, tenantKvBytes: config.tenantQuotaKvBytes,
  }, expected, held);
  return { tokenized, expected };
}

/** Where an object's owner edge holds it; tier null when no tier does (the check never fills the edge). */
interface CachedAt {
  edge: string | null;
  tier: 'memory' | 'disk' | null;
}

/** The manifest with sizes and, for each object, the tier of its owner edge that holds it (asked only-if-cached). */
async function describe(services: KdnServices, manifest: Manifest): Promise<unknown> {
  const where = new Map<string, CachedAt | { error: string }>();
  const keys = manifestObjects(manifest).map((o) => o.key);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(CACHE_CHECK_CONCURRENCY, keys.length) }, async () => {
      while (next < keys.length) {
        const key = keys[next++]!;
        try {
          where.set(key, (await services.edges.cachedAt(key)) ?? { edge: null, tier: null });
        } catch (err) {
          where.set(key, { error: (err as Error).message });
        }
      }
    }),
  );
  return {
    ...publicSummary(manifest),
    modelFingerprint: manifest.modelFingerprint,
    chunkBudget: manifest.chunkBudget,
    chunks: manifest.chunks.map((chunk) => ({
      index: chunk.index,
      tokens: chunk.tokenIds.length,
      text: chunk.text,
      independent: { ...chunk.independent, cached: where.get(chunk.independent.key) },
      chained: chunk.chained ? { ...chunk.chained, cached: where.get(chunk.chained.key) } : null,
    })),
  };
}
