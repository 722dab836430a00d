import { expect } from 'chai';
import { Agent } from 'node:http';
import { join } from 'node:path';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';
import { recordFigures } from './support/figures.ts';
import { edgeCase, kdnCase, sampleObjects, type FuzzCase } from './support/fuzz-cases.ts';
import { sendCase } from './support/fuzz-send.ts';
import { healthy } from './support/kdn-api.ts';
import { mib, MiB, rssBytes } from './support/proc-stats.ts';
import { Rng } from './support/rng.ts';
import { startEdgeProcess, startKdn, tempDir, type Started } from './support/stack.ts';

const SEED = Number(process.env.KDN_FUZZ_SEED ?? 20_260_801);
const KDN_CASES = 6_000;
const EDGE_CASES = 4_000;
const CONCURRENCY = 8;
/** Resident memory either server may gain over the run: far below what keeping bodies or sockets would cost. */
const RSS_GROWTH_LIMIT = 96 * MiB;

interface Tally {
  cases: number;
  status4xx: number;
  cleanRejections: number;
  status5xx: number;
  other: number;
  /** Labels of cases that were not rejected, with the status, for the failure message. */
  wrong: string[];
}

/**
 * Bad input: a seeded fuzz run of malformed requests against kdn and an edge (separate processes). Every case must
 * be refused with a 4xx or a closed connection (malformed HTTP); no 5xx, both processes alive and healthy after,
 * resident memory bounded. Replay a failure with KDN_FUZZ_SEED=<seed>.
 */
describe('fault: malformed requests (fuzz)', function () {
  this.timeout(240_000);
  let model: TestModel;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let edge: Started;
  let kdn: Started;

  before(async () => {
    model = await testModel({ preferShipped: false });
    tmp = await tempDir('kdn-fault-fuzz-');
    const origin = `file:${join(tmp.dir, 'origin')}`;
    edge = await startEdgeProcess(['--origin', origin, '--disk-path', join(tmp.dir, 'edge'), '--max-body', '1MiB']);
    kdn = await startKdn({
      model: model.dir,
      dataDir: join(tmp.dir, 'kdn'),
      args: ['--origin', origin, '--edges', edge.ready.url, '--max-upload', '64KiB'],
    });
  });

  after(async () => {
    await kdn?.stop();
    await edge?.stop();
    await model?.cleanup();
    await tmp?.cleanup();
  });

  it(`refuses ${KDN_CASES + EDGE_CASES} malformed requests cleanly, with no 5xx and bounded memory`, async () => {
    const rng = new Rng(SEED);
    const objects = sampleObjects();
    const cases: { target: 'kdn' | 'edge'; c: FuzzCase }[] = [
      ...Array.from({ length: KDN_CASES }, () => ({ target: 'kdn' as const, c: kdnCase(rng) })),
      ...Array.from({ length: EDGE_CASES }, () => ({ target: 'edge' as const, c: edgeCase(rng, objects) })),
    ];
    const bases = { kdn: new URL(kdn.ready.url), edge: new URL(edge.ready.url) };
    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const tallies = { kdn: newTally(), edge: newTally() };

    // A short warm-up first, so the baseline RSS includes the servers' steady state (JIT, pools), not their start.
    const warmup = cases.filter((_, i) => i % 50 === 0);
    await runAll(warmup, bases, agent, { kdn: newTally(), edge: newTally() });
    const before = { kdn: await rssBytes(kdn.child.pid!), edge: await rssBytes(edge.child.pid!) };
    await runAll(cases, bases, agent, tallies);
    agent.destroy();
    const after = { kdn: await rssBytes(kdn.child.pid!), edge: await rssBytes(edge.child.pid!) };

    const crashes = [kdn, edge].filter((p) => p.child.exitCode !== null || p.child.signalCode !== null).length;
    const kdnHealthy = await healthy(kdn.ready.url);
    const edgeHealthy = (await fetch(`${edge.ready.url}/healthz`).catch(() => undefined))?.ok === true;
    const total = (key: keyof Omit<Tally, 'wrong'>): number => tallies.kdn[key] + tallies.edge[key];
    recordFigures('badInput', {
      seed: SEED,
      cases: total('cases'),
      status4xx: total('status4xx'),
      cleanRejections: total('cleanRejections'),
      status5xx: total('status5xx'),
      otherStatus: total('other'),
      crashes,
      kdnCases: tallies.kdn.cases,
      edgeCases: tallies.edge.cases,
      kdnRssBeforeMiB: mib(before.kdn),
      kdnRssAfterMiB: mib(after.kdn),
      edgeRssBeforeMiB: mib(before.edge),
      edgeRssAfterMiB: mib(after.edge),
    });
    expect([...tallies.kdn.wrong, ...tallies.edge.wrong].slice(0, 20)).to.deep.equal([]);
    expect(total('cases')).to.be.at.least(10_000);
    expect(total('status5xx')).to.equal(0);
    expect(crashes).to.equal(0);
    expect(kdnHealthy && edgeHealthy, 'both servers answer /healthz after the run').to.equal(true);
    expect(after.kdn - before.kdn, 'kdn RSS growth').to.be.below(RSS_GROWTH_LIMIT);
    expect(after.edge - before.edge, 'edge RSS growth').to.be.below(RSS_GROWTH_LIMIT);
  });
});

function newTally(): Tally {
  return { cases: 0, status4xx: 0, cleanRejections: 0, status5xx: 0, other: 0, wrong: [] };
}

async function runAll(
  cases: { target: 'kdn' | 'edge'; c: FuzzCase }[],
  bases: Record<'kdn' | 'edge', URL>,
  agent: Agent,
  tallies: Record<'kdn' | 'edge', Tally>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < cases.length) {
        const { target, c } = cases[next++]!;
        const outcome = await sendCase(bases[target], agent, c);
        const tally = tallies[target];
        tally.cases++;
        if ('closed' in outcome) tally.cleanRejections++;
        else if (outcome.status >= 400 && outcome.status < 500) tally.status4xx++;
        else {
          if (outcome.status >= 500) tally.status5xx++;
          else tally.other++;
          tally.wrong.push(`${target} ${outcome.status} ${c.label}${c.kind === 'http' ? ` ${c.method} ${c.path.slice(0, 60)}` : ''}`);
        }
      }
    }),
  );
}
