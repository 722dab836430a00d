import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import multer from 'multer';
import { KdnError, isKdnError } from '../../../common/errors.ts';
import { principalOf } from '../../auth/authenticate.ts';
import type { JobView } from '../../ingest/jobs.ts';
import type { ObjectRef } from '../../manifest.ts';
import type { QueryJobView } from '../../query/query-service.ts';
import type { DocumentService } from '../../services/document-service.ts';
import type { JobService } from '../../services/job-service.ts';
import type { RouteHandlers } from '../mount-routes.ts';
import { publicJob, publicSummary } from '../public-views.ts';
import { NamespaceQuerySchema, UPLOAD_HINTS, UploadSchema } from '../schemas.ts';
import { validate } from '../validate.ts';

/**
 * Knowledge: an upload (JSON {namespace, title, text} or multipart with a `file` and optional `title`, `namespace`
 * fields) answers 202 with an ingest job (see ./jobs.ts); documents are listed, described and deleted by namespace.
 */
export function documentHandlers(documents: DocumentService, jobs: JobService): RouteHandlers<'documents'> {
  const limit = documents.maxUploadBytes;
  const upload = multer({ storage: multer.memoryStorage(), limits: { fileSize: limit, files: 1, fields: 8, fieldSize: 64 * 1024 } });
  return {
    upload: [
      express.json({ limit: limit + 64 * 1024 }),
      uncompressedMultipart,
      multipartErrors(upload.single('file')),
      async (req: Request, res: Response) => {
        const input = validate(UploadSchema, uploadFields(req), 'upload', UPLOAD_HINTS);
        const { job, id } = await documents.upload(principalOf(res).tenant, input);
        const document = { id, namespace: input.namespace, title: input.title };
        res
          .status(202)
          .location(`/v1/jobs/${job.id}`)
          .json({ job: publicJob(job), document });
      },
    ],

    list: (req: Request, res: Response) => {
      const { namespace } = validate(NamespaceQuerySchema, req.query, 'query string');
      res.json({ namespace, documents: documents.list(principalOf(res).tenant, namespace).map(publicSummary) });
    },

    get: async (req: Request, res: Response) => {
      const { namespace } = validate(NamespaceQuerySchema, req.query, 'query string');
      const { manifest, cachedAt } = await documents.describe(principalOf(res).tenant, namespace, String(req.params.id));
      const cached = (ref: ObjectRef | null) => ref && { ...ref, cached: cachedAt.get(ref.key) };
      res.json({
        ...publicSummary(manifest),
        modelFingerprint: manifest.modelFingerprint,
        chunkBudget: manifest.chunkBudget,
        chunks: manifest.chunks.map((chunk) => ({
          index: chunk.index,
          tokens: chunk.tokenIds.length,
          text: chunk.text,
          independent: cached(chunk.independent),
          chained: cached(chunk.chained),
          ...(chunk.levels
            ? { levels: chunk.levels.map((l) => ({ codec: l.codec, independent: cached(l.independent), chained: cached(l.chained) })) }
            : {}),
        })),
      });
    },

    remove: async (req: Request, res: Response) => {
      const { namespace } = validate(NamespaceQuerySchema, req.query, 'query string');
      const tenant = principalOf(res).tenant;
      const ref = String(req.params.id);
      const { manifest, objects } = await documents.remove(tenant, namespace, ref).catch((err: unknown) => {
        throw namingIngestJob(err, jobs.list(tenant, { kind: 'ingest' }), namespace, ref);
      });
      res.json({ deleted: publicSummary(manifest), objects });
    },
  };
}

/**
 * A document is published when its ingest job is done, so until then it is not found: name the job the caller
 * may wait for or cancel, when one of its own is queued or running for that document.
 */
function namingIngestJob(err: unknown, jobs: (JobView | QueryJobView)[], namespace: string, ref: string): unknown {
  if (!isKdnError(err, 'NOT_FOUND')) return err;
  const job = jobs
    .filter((j): j is JobView => j.kind === 'ingest' && (j.status === 'queued' || j.status === 'running'))
    .map(publicJob)
    .find((j) => j.document.namespace === namespace && (j.document.id === ref || j.document.title === ref));
  if (!job) return err;
  return new KdnError('NOT_FOUND', `${err.message}: its ingest job ${job.id} is still ${job.status}`, {
    hint: `delete it once the job is done (kdn jobs, GET /v1/jobs/${job.id}), or stop the upload with kdn jobs cancel ${job.id} (DELETE /v1/jobs/${job.id})`,
  });
}

/**
 * Multer parses the bytes as they come, so a compressed form would be read as if it were not: only JSON bodies
 * (express.json) are inflated.
 */
function uncompressedMultipart(req: Request, _res: Response, next: NextFunction): void {
  const encoding = (req.headers['content-encoding'] || 'identity').trim().toLowerCase();
  if (encoding === 'identity' || !req.is('multipart/form-data')) {
    next();
    return;
  }
  next(
    new KdnError('UNSUPPORTED_MEDIA_TYPE', `multipart uploads are read uncompressed, not with Content-Encoding "${encoding}"`, {
      hint: 'send the form without Content-Encoding, or upload {"title", "text"} as JSON, which may be gzip-, deflate- or br-encoded',
    }),
  );
}

/** Multer passes the form parser's own errors (no closing boundary, no boundary at all) through as plain Errors: they are the client's. */
function multipartErrors(handler: RequestHandler): RequestHandler {
  return (req, res, next) => {
    void handler(req, res, (err?: unknown) => {
      if (err === undefined || err instanceof multer.MulterError || err instanceof KdnError || !(err instanceof Error)) next(err);
      else
        next(
          new KdnError('INVALID_ARGUMENT', `bad multipart upload: ${err.message}`, {
            hint: 'send a well-formed multipart/form-data body with one "file" field',
          }),
        );
    });
  };
}

/** The upload's fields from a JSON body, or from a multipart form whose file is the text (title defaults to its name). */
function uploadFields(req: Request): unknown {
  const file = req.file;
  if (!file) {
    if (!req.is('application/json')) {
      throw new KdnError(
        'UNSUPPORTED_MEDIA_TYPE',
        `uploads are JSON or multipart/form-data, not ${req.headers['content-type'] ?? 'an untyped body'}`,
        {
          hint: 'send {"title": ..., "text": ...} as application/json, or a multipart form with a "file" field',
        },
      );
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
