import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { KEYS, startSecurityStack, type SecurityStack } from '../security/support/stack.ts';

interface Detail {
  chunks: { independent: { key: string; cached: { edge: string | null; tier: string | null } }; chained: { key: string } | null }[];
}

const keysOf = (detail: Detail): string[] => detail.chunks.flatMap((c) => [c.independent.key, ...(c.chained ? [c.chained.key] : [])]);

/** Two documents that open with the same sentences share those chunks' objects (keys are content addressed). */
const opening = ['north', 'east', 'south', 'west', 'inner', 'outer']
  .map((pier, i) => `Harbour note ${i}: the ${pier} pier lamp is lit at dusk.`)
  .join(' ');

describe('DELETE /v1/documents/:id purges the objects only that document used, at the edges and the origin', function () {
  this.timeout(120_000);
  let stack: SecurityStack;

  before(async () => {
    stack = await startSecurityStack();
  });

  after(async () => {
    await stack?.close();
  });

  it('deletes and purges its own objects, keeps the shared ones, and the other document still answers', async () => {
    const a = await stack.upload(KEYS.alice, { namespace: 'notes', title: 'a.txt', text: `${opening} Alice keeps bees and sells honey.` });
    const b = await stack.upload(KEYS.alice, { namespace: 'notes', title: 'b.txt', text: `${opening} Bob mends nets by the slipway.` });
    const detailA = (await stack.call(KEYS.alice, 'GET', `/v1/documents/${a.id}?namespace=notes`)).body as unknown as Detail;
    const detailB = (await stack.call(KEYS.alice, 'GET', `/v1/documents/${b.id}?namespace=notes`)).body as unknown as Detail;
    // The detail says, per object, which tier of its owner edge holds it.
    for (const chunk of detailA.chunks) {
      expect(chunk.independent.cached.edge === null || chunk.independent.cached.edge === stack.edge.ready.url).to.equal(true);
      expect([null, 'memory', 'disk']).to.include(chunk.independent.cached.tier);
    }
    const keysA = keysOf(detailA);
    const keysB = new Set(keysOf(detailB));
    const onlyA = [...new Set(keysA.filter((k) => !keysB.has(k)))];
    const shared = [...new Set(keysA.filter((k) => keysB.has(k)))];
    expect(onlyA.length, 'objects of a.txt alone').to.be.greaterThan(0);
    expect(shared.length, 'objects both documents use').to.be.greaterThan(0);
    const origin = (key: string): string => join(stack.originDir, 'objects', ...key.split('/'));
    for (const key of keysA) expect(existsSync(origin(key)), key).to.equal(true);

    const deleted = await stack.call(KEYS.alice, 'DELETE', `/v1/documents/${a.id}?namespace=notes`);
    expect(deleted.status, JSON.stringify(deleted.body)).to.equal(200);
    expect(deleted.body.objects).to.deep.equal({ deleted: onlyA.length, purgedAtEdges: onlyA.length, sharedKept: shared.length });
    expect((deleted.body.deleted as { namespace: string }).namespace, 'the plain namespace name').to.equal('notes');
    for (const key of onlyA) expect(existsSync(origin(key)), `${key} left the origin`).to.equal(false);
    for (const key of shared) expect(existsSync(origin(key)), `${key} is still used by b.txt`).to.equal(true);

    expect((await stack.call(KEYS.alice, 'GET', `/v1/documents/${a.id}?namespace=notes`)).status).to.equal(404);
    const question = { question: 'Who mends nets?', namespace: 'notes', documents: [b.id], maxTokens: 2 };
    const answer = await stack.call(KEYS.alice, 'POST', '/v1/query', question);
    expect(answer.status, JSON.stringify(answer.body)).to.equal(200);
  });
});
