import { readFile, writeFile } from 'node:fs/promises';
import { expect } from 'chai';
import type { QueryResponse } from '../../kdn/client/api-client.ts';
import type { Manifest } from '../../kdn/manifest.ts';
import { tokenHash, verifyKVObject } from '../../storage/kv-object/index.ts';
import { httpRequest, tokenHeader } from '../edge/helpers.ts';
import { originFile } from '../faults/support/corrupt.ts';
import { TEST_EDGE_SECRET } from '../kdn/support/processes.ts';
import { KEYS, startSecurityStack, type SecurityStack } from './support/stack.ts';

const TEXT = 'The miller opens the sluice at dawn. The wheel turns and the stones grind the barley. '.repeat(4);

describe('security: a corrupt origin object is repaired', function () {
  this.timeout(120_000);
  let stack: SecurityStack;
  let docId: string;

  before(async () => {
    stack = await startSecurityStack();
    docId = (await stack.upload(KEYS.alice, { namespace: 'mill', title: 'mill.txt', text: TEXT })).id;
  });

  after(async () => {
    await stack?.close();
  });

  const ask = async (): Promise<QueryResponse> => {
    const answer = await stack.call(KEYS.alice, 'POST', '/v1/query', { question: 'What does the miller open?', namespace: 'mill', documents: [docId], maxTokens: 4 });
    expect(answer.status, JSON.stringify(answer.body)).to.equal(200);
    return answer.body as unknown as QueryResponse;
  };

  it('9: a chunk object corrupted at the origin is computed around once, then rewritten there from a recomputation', async () => {
    const baseline = await ask();
    const first = baseline.chunks[0]!;
    const manifest = JSON.parse(await readFile(originFile(stack.originDir, `manifests/alice/mill/${docId}.json`), 'utf8')) as Manifest;
    const key = first.kind === 'chained' ? manifest.chunks[first.index]!.chained!.key : manifest.chunks[first.index]!.independent.key;
    const chunk = manifest.chunks[first.index]!;
    const expectation = { modelFingerprint: manifest.modelFingerprint, tokens: chunk.tokenIds.length, tokenHash: tokenHash(chunk.tokenIds) };
    const file = originFile(stack.originDir, key);
    const good = await readFile(file);
    const bad = Buffer.from(good);
    bad[bad.length - 5]! ^= 0xff;
    await writeFile(file, bad);
    // The edge's tiers forget it, so the next read goes to the (now corrupt) origin.
    const purge = await httpRequest(stack.edge.ready.url, 'DELETE', `/kv/${key}`, { headers: tokenHeader('DELETE', `/kv/${key}`, TEST_EDGE_SECRET) });
    expect(purge.status).to.equal(200);

    const during = await ask();
    expect(during.chunks.find((c) => c.index === first.index && c.kind === first.kind)!.tier).to.equal('computed');

    // The repair runs behind the query; the origin holds a verified object again once it is done.
    for (;;) {
      const now = await readFile(file);
      try {
        verifyKVObject(now, expectation);
        break;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    const after = await ask();
    expect(after.chunks.find((c) => c.index === first.index && c.kind === first.kind)!.tier).to.not.equal('computed');
    expect(after.chunks.every((c) => c.tier !== 'computed')).to.equal(true);
  });
});
