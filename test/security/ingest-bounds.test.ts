import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import { KEYS, startSecurityStack, type SecurityStack } from './support/stack.ts';

const PROSE = (n: number): string =>
  Array.from({ length: n }, (_, i) => `Paragraph ${i}: the ferry leaves the harbour at dawn and returns before the evening tide.`).join(
    '\n\n',
  );

describe('security: ingest amplification', function () {
  this.timeout(120_000);
  let stack: SecurityStack;

  before(async () => {
    stack = await startSecurityStack({ kdn: { KDN_MAX_UPLOAD_TOKENS: '3000', KDN_TENANT_QUOTA_TOKENS: '4000' } });
  });

  after(async () => {
    await stack?.close();
  });

  it('10: a binary (/bin/ls) is refused with 415 and a hint, as JSON text and as a file; no job is made', async () => {
    const binary = readFileSync(process.execPath).subarray(0, 150_000);
    const asJson = await stack.call(KEYS.mallory, 'POST', '/v1/documents', {
      namespace: 'bin',
      title: 'ls',
      text: binary.toString('utf8'),
    });
    expect(asJson.status).to.equal(415);
    expect(asJson.body.error?.hint).to.match(/plain text/);
    const form = new FormData();
    form.append('file', new Blob([binary.toString('latin1')]), 'ls');
    const asFile = await fetch(`${stack.kdn.ready.url}/v1/documents`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEYS.mallory}` },
      body: form,
    });
    expect(asFile.status).to.equal(415);
    const usage = (await stack.call(KEYS.mallory, 'GET', '/v1/usage')).body;
    expect(usage['documents']).to.equal(0);
    // Text in any script, with tabs and Windows line ends, is text.
    const text = 'Ο μύλος γυρίζει.\t磨坊在黎明时开门。\r\nThe mill turns 🌊 at dawn.\r\n'.repeat(3);
    expect((await stack.call(KEYS.bob, 'POST', '/v1/documents', { namespace: 'scripts', title: 'mill', text })).status).to.equal(202);
  });

  it('10: the expected size is reported before work starts, is an upper bound, and per-upload and per-tenant quotas hold', async () => {
    const accepted = await stack.call(KEYS.mallory, 'POST', '/v1/documents', { namespace: 'text', title: 'ferry-1', text: PROSE(10) });
    expect(accepted.status).to.equal(202);
    const job = accepted.body['job'] as JobView;
    expect(job.expected).to.not.equal(undefined);
    expect(job.expected!.tokens).to.be.greaterThan(0).and.at.most(3000);
    console.log(`      expected ${JSON.stringify(job.expected)}`);
    let done: JobView;
    for (;;) {
      done = (await stack.call(KEYS.mallory, 'GET', `/v1/jobs/${job.id}`)).body as unknown as JobView;
      if (done.status === 'done' || done.status === 'failed') break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(done.status).to.equal('done');
    expect(done.progress.bytes).to.be.greaterThan(0).and.at.most(job.expected!.kvBytes);
    expect(done.progress.chunks).to.equal(job.expected!.chunks);

    const tooBig = await stack.call(KEYS.mallory, 'POST', '/v1/documents', { namespace: 'text', title: 'ferry-big', text: PROSE(400) });
    expect(tooBig.status).to.equal(413);
    expect((tooBig.body.error as { details?: { expected?: { tokens: number } } }).details?.expected?.tokens).to.be.greaterThan(3000);

    // Up to the tenant's quota, then refused; another tenant is not affected.
    const statuses: number[] = [];
    for (let i = 2; i < 8; i++)
      statuses.push(
        (await stack.call(KEYS.mallory, 'POST', '/v1/documents', { namespace: 'text', title: `ferry-${i}`, text: PROSE(10) })).status,
      );
    expect(statuses).to.include(202);
    const refused = statuses.indexOf(403);
    expect(refused, `statuses ${statuses.join(' ')}`).to.be.greaterThan(-1);
    expect(statuses.slice(refused).every((s) => s === 403)).to.equal(true);
    expect((await stack.call(KEYS.bob, 'POST', '/v1/documents', { namespace: 'text', title: 'ferry-1', text: PROSE(10) })).status).to.equal(
      202,
    );
  });
});
