import express, { type Request, type RequestHandler, type Response } from 'express';
import multer from 'multer';
import { KdnError } from '../../../common/errors.ts';
import { principalOf } from '../../auth/authenticate.ts';
import type { ObjectRef } from '../../manifest.ts';
import type { DocumentService } from '../../services/document-service.ts';
import type { RouteHandlers } from '../mount-routes.ts';
import { publicJob, publicSummary } from '../public-views.ts';
import { NamespaceQuerySchema, UploadSchema } from '../schemas.ts';
import { validate } from '../validate.ts';

/**
 * Knowledge: an upload (JSON {namespace, title, text} or multipart with a `file` and optional `title`, `namespace`
 * fields) answers 202 with an ingest job (see ./jobs.ts); documents are listed, described and deleted by namespace.
 */
export function documentHandlers(documents: DocumentService): RouteHandlers<'documents'> {
  const limit = documents.maxUploadBytes;
  const upload = multer({ storage: multer.memoryStorage(), limits: { fileSize: limit, files: 1, fields: 8, fieldSize: 64 * 1024 } });
  return {
    upload: [
      express.json({ limit: limit + 64 * 1024 }),
      multipartErrors(upload.single('file')),
      async (req: Request, res: Response) => {
        const input = validate(UploadSchema, uploadFields(req), 'upload');
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
      const { manifest, objects } = await documents.remove(principalOf(res).tenant, namespace, String(req.params.id));
      res.json({ deleted: publicSummary(manifest), objects });
    },
  };
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
