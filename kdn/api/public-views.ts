import { publicName } from '../auth/tenancy.ts';
import type { JobView } from '../ingest/jobs.ts';
import { summarize, type DocumentSummary, type Manifest } from '../manifest.ts';

/** Clients see plain namespace names, never the tenant-scoped ones kdn keeps internally. */
export function publicSummary(manifest: Manifest): DocumentSummary {
  return { ...summarize(manifest), namespace: publicName(manifest.namespace) };
}

/** Clients see plain namespace names, never the tenant-scoped ones kdn keeps internally. */
export function publicJob(job: JobView): JobView {
  return { ...job, document: { ...job.document, namespace: publicName(job.document.namespace) } };
}
