import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { UploadResponse } from '../../../kdn/client/api-client.ts';
import type { JobView } from '../../../kdn/ingest/jobs.ts';
import { TEST_EDGE_SECRET, startKdnProcess, startKdnServe, type Started } from '../../../fixtures/processes.ts';
import { testModel, type TestModel } from '../../kdn/support/tiny-model.ts';

/** Three tenants' keys; mallory is the attacker, alice the victim, bob a bystander. */
export const KEYS = {
  alice: 'alice-key-0123456789abcdef',
  bob: 'bob-key-0123456789abcdef01',
  mallory: 'mallory-key-0123456789abcd',
  operator: 'operator-key-0123456789ab',
} as const;

export interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, unknown> & { error?: { code: string; message: string; hint?: string } };
}

/** The deployment the attacks run against: a file origin, one standalone edge process, one `kdn serve` process. */
export interface SecurityStack {
  dir: string;
  originDir: string;
  edge: Started;
  kdn: Started;
  model: TestModel;
  call(key: string | undefined, method: string, path: string, body?: unknown): Promise<Answer>;
  upload(key: string, doc: { title: string; text: string; namespace: string }): Promise<{ id: string; job: JobView }>;
  close(): Promise<void>;
}

export async function startSecurityStack(env: { kdn?: NodeJS.ProcessEnv; edge?: NodeJS.ProcessEnv } = {}): Promise<SecurityStack> {
  const model = await testModel({ preferShipped: false });
  const dir = await mkdtemp(join(tmpdir(), 'kdn-security-'));
  const originDir = join(dir, 'origin');
  const edge = await startKdnProcess(
    ['edge', '--port', '0', '--origin', `file:${originDir}`, '--disk-path', join(dir, 'edge'), '--memory', '16MiB', '--disk', '64MiB'],
    env.edge,
  );
  const kdn = await startKdnServe({
    model: model.dir,
    dataDir: join(dir, 'data'),
    chunkTokens: 16,
    codec: 'int8',
    args: ['--origin', `file:${originDir}`, '--edges', edge.ready.url, '--fetch-threads', '0'],
    env: {
      KDN_API_KEYS: `${KEYS.alice}=alice,${KEYS.bob}=bob,${KEYS.mallory}=mallory,${KEYS.operator}=ops:operator`,
      KDN_RATE_LIMIT: '0',
      KDN_EDGE_SECRET: TEST_EDGE_SECRET,
      ...env.kdn,
    },
  });
  const url = kdn.ready.url;
  const call = async (key: string | undefined, method: string, path: string, body?: unknown): Promise<Answer> => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: {
        ...(key ? { authorization: `Bearer ${key}` } : {}),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: Answer['body'];
    try {
      parsed = JSON.parse(text) as Answer['body'];
    } catch {
      parsed = { text };
    }
    return { status: res.status, headers: res.headers, body: parsed };
  };
  const upload = async (key: string, doc: { title: string; text: string; namespace: string }): Promise<{ id: string; job: JobView }> => {
    const answer = await call(key, 'POST', '/v1/documents', doc);
    expect(answer.status, JSON.stringify(answer.body)).to.equal(202);
    const { job, document } = answer.body as unknown as UploadResponse;
    for (;;) {
      const view = (await call(key, 'GET', `/v1/jobs/${job.id}`)).body as unknown as JobView;
      if (view.status === 'done') return { id: document.id, job: view };
      if (view.status === 'failed') throw new Error(`ingest failed: ${JSON.stringify(view.error)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  return {
    dir,
    originDir,
    edge,
    kdn,
    model,
    call,
    upload,
    close: async () => {
      await kdn.stop('SIGTERM');
      await edge.stop('SIGTERM');
      await model.cleanup();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
