import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { KdnApiClient, type QueryResponse } from '../../kdn/client/api-client.ts';
import { startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const TEXT = 'The river carries water from the hills to the sea. Mills stand along its banks and grind the grain. '.repeat(6);
const LAKE = 'The lake lies still under the mountain. Fishermen row out at dawn and come back with their nets full. '.repeat(5);
const KEY_A = 'hot-tier-key-a-0123456789abcdef';
const KEY_B = 'hot-tier-key-b-0123456789abcdef';

/** kdn serve with the engine's hot tier on: a repeated query's chunks come from the engine, not the edge. */
describe('kdn queries and the engine hot tier', function () {
  this.timeout(120_000);
  let model: TestModel;
  let dir: string;
  let kdn: Started;
  let a: KdnApiClient;
  let b: KdnApiClient;
  /** The suite's first query: it computed the sink token and fetched every chunk. */
  let firstAnswer: string | undefined;

  /** kdn's chunk fetch counters by tier, from GET /metrics. */
  const fetchCounts = async (): Promise<Record<string, number>> => {
    const text = await (await fetch(`${kdn.ready.url}/metrics`, { headers: { authorization: `Bearer ${KEY_A}` } })).text();
    const counts: Record<string, number> = {};
    for (const m of text.matchAll(/^kdn_chunk_fetches_total\{tier="(\w+)"\} (\d+)$/gm)) counts[m[1]!] = Number(m[2]);
    return counts;
  };
  const fromEdges = (counts: Record<string, number>): number =>
    Object.entries(counts)
      .filter(([tier]) => tier !== 'engine' && tier !== 'computed')
      .reduce((n, [, c]) => n + c, 0);
  const ask = (api: KdnApiClient, namespace: string): Promise<QueryResponse> =>
    api.query({ question: 'What do the mills do?', namespace, documents: ['river'], maxTokens: 8 });

  before(async () => {
    model = await testModel({ preferShipped: false });
    dir = await mkdtemp(join(tmpdir(), 'kdn-hot-'));
    kdn = await startKdnServe({
      model: model.dir,
      dataDir: join(dir, 'kdn'),
      chunkTokens: 24,
      args: ['--hot-tier', '64MiB'],
      env: { KDN_API_KEYS: `${KEY_A}=tenant-a:operator,${KEY_B}=tenant-b` },
    });
    a = new KdnApiClient(kdn.ready.url, KEY_A);
    b = new KdnApiClient(kdn.ready.url, KEY_B);
    const uploads = [
      [a, 'ns-a', 'river', TEXT],
      [b, 'ns-b', 'river', TEXT],
      [a, 'ns-a', 'lake', LAKE],
    ] as const;
    for (const [api, namespace, title, text] of uploads) {
      const { job } = await api.upload({ title, text, namespace });
      expect((await api.waitForJob(job.id)).status).to.equal('done');
    }
  });

  after(async () => {
    await kdn?.stop();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('answers a repeated query the same from resident chunks, fetching nothing for them', async () => {
    const first = await ask(a, 'ns-a');
    firstAnswer = first.answer;
    expect(first.chunks.length).to.be.at.least(2);
    expect(first.chunks.every((c) => c.tier !== 'computed' && c.tier !== 'engine')).to.equal(true);
    expect(first.residentChunks).to.equal(0);
    // The server's first query computes the sink token; every later one places it from the hot tier.
    expect(first.tokens.computed).to.equal(first.tokens.prompt + 1);
    const before = await fetchCounts();

    const second = await ask(a, 'ns-a');
    expect(second.answer).to.equal(first.answer);
    expect(second.chunks.map((c) => c.tier)).to.deep.equal(first.chunks.map(() => 'engine'));
    expect(second.residentChunks).to.equal(first.chunks.length);
    expect(second.bytes).to.equal(0);
    expect(second.tokens.reused).to.equal(first.tokens.reused);
    expect(second.tokens.computed).to.equal(second.tokens.prompt);
    const after = await fetchCounts();
    expect(fromEdges(after)).to.equal(fromEdges(before));
    expect((after.engine ?? 0) - (before.engine ?? 0)).to.equal(first.chunks.length);
  });

  it('places a resident leading run and fetches the rest after it, answering as when all of it is resident', async () => {
    const both = (): Promise<QueryResponse> =>
      a.query({ question: 'What do the fishermen do?', namespace: 'ns-a', documents: ['river', 'lake'], maxTokens: 8 });
    const river = (await ask(a, 'ns-a')).chunks.length;
    const mixed = await both();
    const tiers = mixed.chunks.map((c) => c.tier);
    expect(tiers.slice(0, river)).to.deep.equal(new Array(river).fill('engine'));
    expect(tiers.slice(river).every((t) => t !== 'engine' && t !== 'computed')).to.equal(true);
    expect(mixed.residentChunks).to.equal(river);
    expect(mixed.bytes).to.be.greaterThan(0);
    const resident = await both();
    expect(resident.residentChunks).to.equal(resident.chunks.length);
    expect(resident.answer).to.equal(mixed.answer);
  });

  it("does not serve one tenant's query from another tenant's resident chunks, only the shared sink token", async () => {
    await ask(a, 'ns-a');
    const other = await ask(b, 'ns-b');
    expect(other.residentChunks).to.equal(0);
    expect(other.chunks.every((c) => c.tier !== 'engine')).to.equal(true);
    expect(other.bytes).to.be.greaterThan(0);
    // The sink's KV is the model's, the same for every query: placed from the tier, not computed, and the answer is
    // the one tenant A got when its first query computed the sink over the same text's chunks.
    expect(other.tokens.computed).to.equal(other.tokens.prompt);
    expect(other.answer).to.equal(firstAnswer);
  });
});
