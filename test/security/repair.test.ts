import { readFile, writeFile } from 'node:fs/promises';
import { expect } from 'chai';
import type { QueryResponse } from '../../kdn/client/api-client.ts';
import type { Manifest } from '../../kdn/manifest.ts';
import { tokenHash, verifyKVObject } from '../../storage/kv-object/index.ts';
import type { KVExpectation } from '../../storage/kv-object/types.ts';
import { httpRequest, tokenHeader } from '../edge/helpers.ts';
import { originFile } from '../faults/support/corrupt.ts';
import { TEST_EDGE_SECRET } from '../../fixtures/processes.ts';
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
    const answer = await stack.call(KEYS.alice, 'POST', '/v1/query', {
      question: 'What does the miller open?',
      namespace: 'mill',
      documents: [docId],
      maxTokens: 4,
    });
    expect(answer.status, JSON.stringify(answer.body)).to.equal(200);
    return answer.body as unknown as QueryResponse;
  };

  const intact = async (file: string, expectation: KVExpectation): Promise<boolean> => {
    try {
      verifyKVObject(await readFile(file), expectation);
      return true;
    } catch {
      return false;
    }
  };

  it('9: chunk objects corrupted at the origin are computed around once, then rewritten there from a recomputation', async () => {
    const baseline = await ask();
    expect(baseline.chunks.length).to.be.at.least(3);
    const manifest = JSON.parse(await readFile(originFile(stack.originDir, `manifests/alice/mill/${docId}.json`), 'utf8')) as Manifest;
    const damaged = baseline.chunks.map((used) => {
      const chunk = manifest.chunks[used.index]!;
      const key = used.kind === 'chained' ? chunk.chained!.key : chunk.independent.key;
      return {
        key,
        file: originFile(stack.originDir, key),
        expectation: { modelFingerprint: manifest.modelFingerprint, tokens: chunk.tokenIds.length, tokenHash: tokenHash(chunk.tokenIds) },
      };
    });
    for (const { key, file } of damaged) {
      const bad = await readFile(file);
      bad[bad.length - 5]! ^= 0xff;
      await writeFile(file, bad);
      // The edge's tiers forget it, so the next read goes to the (now corrupt) origin.
      const purge = await httpRequest(stack.edge.ready.url, 'DELETE', `/kv/${key}`, {
        headers: tokenHeader('DELETE', `/kv/${key}`, TEST_EDGE_SECRET),
      });
      expect(purge.status).to.equal(200);
    }

    const during = await ask();
    expect(during.chunks.every((c) => c.tier === 'computed')).to.equal(true);

    // The repairs run behind the query; the origin holds verified objects again once they are done.
    for (const { file, expectation } of damaged) {
      while (!(await intact(file, expectation))) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const after = await ask();
    expect(after.chunks.map((c) => c.tier).filter((tier) => tier === 'computed')).to.deep.equal([]);
    expect(after.answer).to.equal(baseline.answer);
  });
});
