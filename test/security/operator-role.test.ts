import { expect } from 'chai';
import { KEYS, startSecurityStack, type SecurityStack } from './support/stack.ts';

describe('security: server-wide figures are for operators', function () {
  this.timeout(60_000);
  let stack: SecurityStack;

  before(async () => {
    stack = await startSecurityStack();
    await stack.upload(KEYS.alice, {
      namespace: 'notes',
      title: 'a.txt',
      text: 'Alice writes about the harbour and its three lighthouses. '.repeat(3),
    });
  });

  after(async () => {
    await stack?.close();
  });

  it("8: a tenant's key reads neither /metrics nor /v1/status (origin path, edge URLs); it reads its own usage", async () => {
    for (const key of [KEYS.alice, KEYS.mallory]) {
      const status = await stack.call(key, 'GET', '/v1/status');
      expect(status.status).to.equal(403);
      expect(JSON.stringify(status.body)).to.not.contain(stack.originDir).and.not.contain(stack.edge.ready.url);
      const metrics = await fetch(`${stack.kdn.ready.url}/metrics`, { headers: { authorization: `Bearer ${key}` } });
      expect(metrics.status).to.equal(403);
      expect(await metrics.text()).to.not.contain('kdn_');
    }
    const alice = (await stack.call(KEYS.alice, 'GET', '/v1/usage')).body as {
      tenant: string;
      documents: number;
      tokens: number;
      bytes: number;
      namespaces: Record<string, unknown>;
    };
    expect(alice).to.include({ tenant: 'alice', documents: 1 });
    expect(alice.tokens).to.be.greaterThan(0);
    expect(alice.bytes).to.be.greaterThan(0);
    expect(Object.keys(alice.namespaces)).to.deep.equal(['notes']);
    const mallory = (await stack.call(KEYS.mallory, 'GET', '/v1/usage')).body;
    expect(mallory).to.deep.equal({ tenant: 'mallory', documents: 0, tokens: 0, bytes: 0, namespaces: {} });
  });

  it('8: an operator key reads both', async () => {
    const status = await stack.call(KEYS.operator, 'GET', '/v1/status');
    expect(status.status).to.equal(200);
    expect(status.body['edges']).to.deep.equal([stack.edge.ready.url]);
    const metrics = await fetch(`${stack.kdn.ready.url}/metrics`, { headers: { authorization: `Bearer ${KEYS.operator}` } });
    expect(metrics.status).to.equal(200);
    expect(await metrics.text()).to.contain('kdn_');
  });
});
