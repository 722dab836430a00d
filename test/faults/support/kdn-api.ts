import { KdnApiClient } from '../../../kdn/client/api-client.ts';
import type { JobView } from '../../../kdn/ingest/jobs.ts';
import type { Manifest } from '../../../kdn/manifest.ts';
import { API_KEY, authHeaders } from './auth.ts';

/** The shared kdn REST client with the fault tests' API key. */
export function kdnClient(url: string): KdnApiClient {
  return new KdnApiClient(url, API_KEY);
}

/** Uploads and waits for the ingest to finish (polling every 100 ms); a failed job is an error. */
export async function ingest(api: KdnApiClient, title: string, text: string): Promise<JobView> {
  const { job } = await api.upload({ title, text });
  return api.waitForJob(job.id, undefined, 100);
}

/** A document's manifest fields (chunk object keys included). Its detail HEADs every object at the edges. */
export async function manifestOf(api: KdnApiClient, id: string): Promise<Pick<Manifest, 'id' | 'chunks'>> {
  return (await api.document(id)) as unknown as Pick<Manifest, 'id' | 'chunks'>;
}

/** GET /metrics (KdnApiClient has no call for it); `timeoutMs` bounds the call so a hung server fails the test. */
export async function metrics(url: string, timeoutMs = 120_000): Promise<string> {
  const res = await fetch(`${url}/metrics`, { headers: authHeaders(), signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET /metrics answered ${res.status}: ${text.slice(0, 500)}`);
  return text;
}

/** Whether GET /healthz answers 2xx within 5 s (KdnApiClient has no call for it). */
export async function healthy(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/healthz`, { headers: authHeaders(), signal: AbortSignal.timeout(5_000) })).ok;
  } catch {
    return false;
  }
}

/** The value of an unlabelled Prometheus gauge or counter in a /metrics text, or undefined. */
export function metricValue(text: string, name: string): number | undefined {
  const match = new RegExp(`^${name}(?:\\{\\})? (\\S+)$`, 'm').exec(text);
  return match ? Number(match[1]) : undefined;
}
