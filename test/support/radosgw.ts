import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';

const run = promisify(execFile);
const SCRIPTS = path.resolve('test/support/radosgw');

export interface RunningRadosgw {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
  /** Store URL for openStore(), credentials included. */
  url: string;
  /** Stops the cluster and removes its folder. */
  stop(): Promise<void>;
}

/** Ceph's S3 gateway is installed (Debian: ceph-mon, ceph-osd, radosgw; .ci/run installs them). */
export function radosgwInstalled(): boolean {
  return ['/usr/bin/radosgw', '/usr/bin/ceph-mon', '/usr/bin/ceph-osd', '/usr/bin/radosgw-admin'].every((bin) => existsSync(bin));
}

/**
 * For a suite that needs radosgw: true when it is installed; otherwise it skips the suite with a message, except
 * under CI=true, where a missing radosgw fails it (CI installs it, so its absence is a broken setup).
 */
export function requireRadosgw(context: Mocha.Context): boolean {
  if (radosgwInstalled()) return true;
  if (process.env.CI === 'true') throw new Error('radosgw is not installed: .ci/run installs ceph-mon, ceph-osd and radosgw from Debian');
  console.log('      skipped: radosgw is not installed (apt-get install ceph-mon ceph-osd radosgw ceph-common)');
  context.skip();
  return false;
}

/**
 * Starts a one-node Ceph cluster with radosgw on loopback (test/support/radosgw/start.sh: one monitor, one memstore
 * OSD, no cephx) in a temp folder, and creates `bucket` in it. Takes 10-20 s.
 */
export async function startRadosgw(bucket = 'kdn-test'): Promise<RunningRadosgw> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kdn-radosgw-'));
  const cluster = path.join(dir, 'ceph');
  const stop = async (): Promise<void> => {
    await run('bash', [path.join(SCRIPTS, 'stop.sh'), cluster]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const { stdout } = await run('bash', [path.join(SCRIPTS, 'start.sh'), cluster], { timeout: 120_000 });
    const started = JSON.parse(stdout.trim().split('\n').at(-1)!) as { endpoint: string; accessKeyId: string; secretAccessKey: string };
    const client = new S3Client({
      endpoint: started.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: started.accessKeyId, secretAccessKey: started.secretAccessKey },
    });
    try {
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
    } finally {
      client.destroy();
    }
    const query = new URLSearchParams({
      endpoint: started.endpoint,
      accessKeyId: started.accessKeyId,
      secretAccessKey: started.secretAccessKey,
    });
    return { ...started, bucket, url: `s3://${bucket}?${query.toString()}`, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
