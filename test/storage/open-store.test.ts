import { expect } from 'chai';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { isKdnError } from '../../common/errors.ts';
import { FsStore } from '../../storage/fs-store.ts';
import { openStore } from '../../storage/open-store.ts';
import { S3Store } from '../../storage/s3-store.ts';
import { startS3rver, type RunningS3rver } from '../support/s3rver.ts';

describe('storage/open-store', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kdn-open-store-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('opens the same folder from every file form', async () => {
    const folder = path.join(dir, 'with space');
    const relative = path.relative(process.cwd(), folder);
    const forms = [`file:${folder}`, `file:./${relative}`, pathToFileURL(folder).href, folder, `./${relative}`, relative];
    const first = openStore(forms[0]!);
    await first.put('ns/obj', Buffer.from('shared'));
    for (const form of forms) {
      const store = openStore(form);
      expect(store, form).to.be.instanceOf(FsStore);
      expect(store.description, form).to.equal(`file:${folder}`);
      expect((await store.get('ns/obj')).toString(), form).to.equal('shared');
      await store.close();
    }
    await first.close();
  });

  it('opens s3:// URLs with prefix, region and path style, and never shows secrets in its description', () => {
    const store = openStore(
      's3://my-bucket/some/prefix?endpoint=http://127.0.0.1:9000&region=eu-west-1&accessKeyId=AKID&secretAccessKey=TOPSECRET&sessionToken=TOKEN&forcePathStyle=true&timeoutMs=2500',
    );
    expect(store).to.be.instanceOf(S3Store);
    expect(store.description).to.equal('s3://my-bucket/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-1');
    expect(store.description).to.not.match(/TOPSECRET|TOKEN|AKID/);
    const plain = openStore('s3://my-bucket');
    expect(plain.description).to.equal('s3://my-bucket/?region=us-east-1');
    void store.close();
    void plain.close();
  });

  it("signs for the region in AWS_REGION when the URL names none (the URL's region wins)", async () => {
    const scopes: string[] = [];
    const server = createServer((req, res) => {
      scopes.push(/Credential=[^/]+\/\d+\/([^/]+)\/s3\//.exec(req.headers.authorization ?? '')?.[1] ?? 'unsigned');
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const saved = process.env.AWS_REGION;
    process.env.AWS_REGION = 'eu-central-1';
    try {
      const fromEnv = openStore(`s3://bucket?endpoint=${endpoint}&accessKeyId=a&secretAccessKey=b`);
      const fromUrl = openStore(`s3://bucket?endpoint=${endpoint}&accessKeyId=a&secretAccessKey=b&region=ap-south-1`);
      expect(fromEnv.description).to.include('region=eu-central-1');
      expect(await fromEnv.head('k')).to.equal(null);
      expect(await fromUrl.head('k')).to.equal(null);
      expect(scopes).to.deep.equal(['eu-central-1', 'ap-south-1']);
      await fromEnv.close();
      await fromUrl.close();
    } finally {
      if (saved === undefined) delete process.env.AWS_REGION;
      else process.env.AWS_REGION = saved;
      server.close();
    }
  });

  it('rejects bad URLs with INVALID_ARGUMENT, a hint showing the accepted forms, and no secret echoed', () => {
    const bad = [
      '',
      '   ',
      'http://example.com/data',
      'ftp:/data',
      'file:',
      'file://host/data',
      's3://',
      's3://Bad_Bucket',
      's3://bucket/../up',
      's3://bucket?acessKeyId=typo',
      's3://bucket?accessKeyId=only-the-id',
      's3://bucket?accessKeyId=a&secretAccessKey=TOPSECRET&forcePathStyle=yes',
      's3://bucket?endpoint=not-a-url&secretAccessKey=TOPSECRET&accessKeyId=a',
      's3://bucket?endpoint=ftp://host',
      's3://bucket?timeoutMs=soon',
      's3://bucket?timeoutMs=0',
      's3://user:TOPSECRET@bucket',
    ];
    for (const url of bad) {
      let caught: unknown;
      try {
        openStore(url);
      } catch (err) {
        caught = err;
      }
      expect(isKdnError(caught, 'INVALID_ARGUMENT'), `URL ${JSON.stringify(url)} gave ${String(caught)}`).to.equal(true);
      const err = caught as { message: string; hint?: string };
      expect(err.message, url).to.not.include('TOPSECRET');
      expect(err.hint, url)
        .to.match(/file:\.\/data/)
        .and.match(/s3:\/\/bucket/);
    }
  });

  describe('against s3rver', () => {
    let s3: RunningS3rver;
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    before(async () => {
      s3 = await startS3rver();
    });
    after(async () => {
      restore('AWS_ACCESS_KEY_ID', saved.id);
      restore('AWS_SECRET_ACCESS_KEY', saved.secret);
      await s3?.stop();
    });

    it('takes credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY when the URL has none', async () => {
      const url = `s3://${s3.bucket}/env?endpoint=${encodeURIComponent(s3.endpoint)}`;
      // s3rver checks the access key id of SigV4 requests, not their signature.
      process.env.AWS_ACCESS_KEY_ID = 'NOT-S3RVER';
      process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
      const wrong = openStore(url);
      let caught: unknown;
      try {
        await wrong.put('k', Buffer.from('x'));
      } catch (err) {
        caught = err;
      }
      await wrong.close();
      expect(isKdnError(caught, 'STORAGE_ERROR'), String(caught)).to.equal(true);
      expect((caught as { hint?: string }).hint).to.match(/AWS_SECRET_ACCESS_KEY/);

      process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
      const right = openStore(url);
      await right.put('k', Buffer.from('from env'));
      expect((await right.get('k')).toString()).to.equal('from env');
      await right.close();
    });
  });
});

function restore(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
