import { KdnError } from '../../common/errors.ts';
import type { Logger } from '../../common/log.ts';
import type { EdgeClient } from '../../edge/client/client.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import type { ChunkSalts } from '../auth/salts.ts';
import type { Tenancy } from '../auth/tenancy.ts';
import type { Catalog } from '../catalog.ts';
import type { IngestJobs, JobView } from '../ingest/jobs.ts';
import { checkIsText } from '../ingest/text-check.ts';
import { documentId } from '../keys.ts';
import { manifestObjects, type Manifest } from '../manifest.ts';
import { purgeObjects, type PurgeResult } from '../object-purge.ts';
import { lookUpCachedAt, type CachedAt, type EdgeError } from './edge-cache-lookup.ts';
import type { UploadAdmission } from './upload-admission.ts';

/** A document as a client uploads it; `namespace` is the client's plain name, not the tenant-scoped one. */
export interface UploadInput {
  namespace: string;
  title: string;
  text: string;
}

/** What a delete did with a document's objects: those other documents or unfinished ingest jobs use are kept. */
export type RemovedObjects = PurgeResult & { sharedKept: number };

export interface DocumentParts {
  catalog: Catalog;
  jobs: IngestJobs;
  edges: EdgeClient;
  origin: ObjectStore;
  tenancy: Tenancy;
  salts: ChunkSalts;
  admission: UploadAdmission;
  log: Logger;
  maxUploadBytes: number;
}

/**
 * The documents of a tenant's namespaces (or of shared ones it may read, see kdn/auth/tenancy.ts): upload, list,
 * describe, delete. Another tenant's documents are NOT_FOUND, as if they did not exist.
 */
export class DocumentService {
  constructor(private readonly parts: DocumentParts) {}

  /** Largest document text, in bytes, an upload may carry. */
  get maxUploadBytes(): number {
    return this.parts.maxUploadBytes;
  }

  /** Starts the ingest job of a document; a document already stored costs nothing more: its upload only answers a job. */
  async upload(tenant: string, input: UploadInput): Promise<{ job: JobView; id: string }> {
    const { catalog, jobs, tenancy, salts, admission, maxUploadBytes } = this.parts;
    if (Buffer.byteLength(input.text) > maxUploadBytes) {
      throw new KdnError('PAYLOAD_TOO_LARGE', `the document is larger than the ${maxUploadBytes}-byte upload limit`, {
        hint: 'split the document, or raise the limit with kdn serve --max-upload',
      });
    }
    checkIsText(input.text, input.title);
    const scoped = tenancy.scope(tenant, input.namespace, 'write');
    const id = documentId(scoped, input.title, input.text);
    const admitted = (await catalog.find(scoped, id)) ? undefined : await admission.admit(tenant, input.text);
    const salt = salts.saltFor(scoped);
    const document = { ...input, namespace: scoped, id, salt, uploadedBy: tenant, ...(admitted ? { tokenized: admitted.tokenized } : {}) };
    return { job: await jobs.submit(document, admitted?.expected), id };
  }

  list(tenant: string, namespace: string): Manifest[] {
    return this.parts.catalog.list(this.parts.tenancy.scope(tenant, namespace, 'read'));
  }

  /** A document's manifest and, for each of its objects, the tier of its owner edge that holds it. */
  async describe(
    tenant: string,
    namespace: string,
    id: string,
  ): Promise<{ manifest: Manifest; cachedAt: Map<string, CachedAt | EdgeError> }> {
    const manifest = await this.parts.catalog.resolve(this.parts.tenancy.scope(tenant, namespace, 'read'), id);
    return {
      manifest,
      cachedAt: await lookUpCachedAt(
        this.parts.edges,
        manifestObjects(manifest).map((o) => o.key),
      ),
    };
  }

  /** Unpublishes a document and deletes the objects nothing else uses (Catalog.collect), at the edges and the origin. */
  async remove(tenant: string, namespace: string, id: string): Promise<{ manifest: Manifest; objects: RemovedObjects }> {
    const { catalog, tenancy } = this.parts;
    // Resolved for reading first, so a document the tenant cannot see is NOT_FOUND even in a shared namespace.
    const manifest = await catalog.resolve(tenancy.scope(tenant, namespace, 'read'), id);
    tenancy.scope(tenant, namespace, 'write');
    const { unused, purged } = await catalog.unpublish(manifest, (keys) => purgeObjects(keys, this.parts));
    return { manifest, objects: { ...purged, sharedKept: manifestObjects(manifest).length - unused.length } };
  }
}
