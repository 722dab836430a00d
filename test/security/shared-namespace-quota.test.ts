import { expect } from 'chai';
import { corpusText } from '../faults/support/corpus.ts';
import { KEYS, startSecurityStack, type SecurityStack } from './support/stack.ts';

interface Usage {
  documents: number;
  tokens: number;
  bytes: number;
  namespaces: Record<string, { documents: number; tokens: number; bytes: number }>;
}

/**
 * A shared namespace belongs to no tenant, but what its owners upload into it is stored all the same: it counts
 * against the uploading tenant's quota, and GET /v1/usage shows it, or a tenant could store without limit there.
 */
describe('security: uploads into a shared namespace count against the uploader', function () {
  this.timeout(120_000);
  let stack: SecurityStack;

  before(async () => {
    // One document of about 1800 tokens fits the quota, two do not.
    stack = await startSecurityStack({ kdn: { KDN_SHARED_NAMESPACES: 'public=alice', KDN_TENANT_QUOTA_TOKENS: '2500' } });
  });

  after(async () => {
    await stack?.close();
  });

  it('shows the shared document in the uploader’s usage and refuses the next upload past the quota', async () => {
    const first = await stack.upload(KEYS.alice, { namespace: 'public', title: 'harbour-1', text: corpusText(40, 31) });
    for (const namespace of ['public', 'own']) {
      const next = await stack.call(KEYS.alice, 'POST', '/v1/documents', { namespace, title: 'harbour-2', text: corpusText(40, 32) });
      expect(next.status, `${namespace}: ${JSON.stringify(next.body)}`).to.equal(403);
      expect(next.body.error?.hint).to.be.a('string');
    }
    const usage = (await stack.call(KEYS.alice, 'GET', '/v1/usage')).body as unknown as Usage;
    expect(usage.documents).to.equal(1);
    expect(usage.tokens).to.equal(first.job.expected?.tokens);
    expect(usage.bytes).to.be.greaterThan(0);
    expect(usage.namespaces['public']?.documents).to.equal(1);

    // Reading a shared namespace costs a tenant nothing.
    expect(((await stack.call(KEYS.bob, 'GET', '/v1/usage')).body as unknown as Usage).documents).to.equal(0);
    const bobs = await stack.call(KEYS.bob, 'POST', '/v1/documents', { namespace: 'own', title: 'harbour-2', text: corpusText(40, 32) });
    expect(bobs.status, JSON.stringify(bobs.body)).to.equal(202);
  });
});
