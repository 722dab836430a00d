import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { createEngine, createEngineInWorker, type Engine, type PlacingTimelineReport } from '../../engine-adapter/index.ts';
import { LayerGates } from '../../engine-adapter/layer-gates.ts';
import { PlacingTimeline, type GateEvent, type PieceEvent, type UploadEvent } from '../../engine-adapter/placing-timeline.ts';
import type { KVTensors } from '../../storage/kv-object/types.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';
import { computedKV, fileReader, fp16Reader } from './kv-readers.ts';
import { openOrSkip } from './webgpu-support.ts';

const gates = (r: PlacingTimelineReport): GateEvent[] => r.events.filter((e): e is GateEvent => e.kind === 'gate');
const pieces = (r: PlacingTimelineReport): PieceEvent[] => r.events.filter((e): e is PieceEvent => e.kind === 'piece');
const uploads = (r: PlacingTimelineReport): UploadEvent[] => r.events.filter((e): e is UploadEvent => e.kind === 'upload');

/** The gates of a whole forward: ascending layers, each opened after it was asked, the last through every layer. */
function expectGatesCover(report: PlacingTimelineReport, layers: number): void {
  const waits = gates(report);
  expect(waits.length).to.be.greaterThan(0);
  expect(waits[0]!.layer).to.equal(0);
  for (const [i, g] of waits.entries()) {
    expect(g.askedMs).to.be.at.most(g.writtenMs);
    expect(g.writtenMs).to.be.at.most(g.flushedMs);
    expect(g.through).to.be.greaterThan(g.layer);
    if (i > 0) expect(g.layer).to.be.at.least(waits[i - 1]!.layer);
  }
  expect(waits.at(-1)!.through).to.equal(layers);
}

describe('placing timeline', () => {
  it('records gates, pieces (done once the GPU says so), uploads and read latencies, in milliseconds from its start', async () => {
    const t = new PlacingTimeline();
    const asked = performance.now();
    t.gate(0, asked, asked, 4);
    let finish!: () => void;
    t.piece(0, 4, new Promise<void>((resolve) => (finish = resolve)));
    t.piece(4, 8, Promise.reject(new Error('device lost')));
    t.upload(1 << 20, 12, true);
    for (const latency of [1, 2, 3, 4, 50]) t.read(performance.now() - latency);
    t.mark('placed');
    const before = t.report();
    expect(before.events.map((e) => e.kind)).to.deep.equal(['gate', 'piece', 'piece', 'upload']);
    expect(pieces(before)[0]!.doneMs).to.equal(null);
    finish();
    await new Promise((resolve) => setImmediate(resolve));
    const after = t.report();
    const [first, failed] = pieces(after);
    expect(first!.doneMs).to.be.a('number').and.at.least(first!.submittedMs);
    expect(failed!.doneMs, 'a piece whose GPU answer failed').to.equal(null);
    expect(uploads(after)[0]).to.include({ bytes: 1 << 20, dispatches: 12, waitedOnReads: true });
    expect(after.reads!.count).to.equal(5);
    expect(after.reads!.p50Ms).to.be.within(2.9, 4);
    expect(after.reads!.maxMs).to.be.within(50, 60);
    expect(after.placedMs).to.be.a('number');
    expect(after.firstLayerMs).to.equal(null);
    expect(after.startedAtEpoch).to.be.closeTo(Date.now(), 10_000);
    // A report is a copy: later events do not change it.
    expect(pieces(before)[0]!.doneMs).to.equal(null);
  });

  it('LayerGates records each wait: asked, its layers written, flushed', async () => {
    const t = new PlacingTimeline();
    const g = new LayerGates(4, () => undefined, 2, t);
    const waiting = g.wait(0);
    g.setWritten(2);
    expect(await waiting).to.equal(2);
    g.setWritten(4);
    expect(await g.wait(2)).to.equal(4);
    expect(gates(t.report()).map((e) => [e.layer, e.through])).to.deep.equal([
      [0, 2],
      [2, 4],
    ]);
  });

  describe('from an engine', function () {
    this.timeout(120_000);
    let model: TestModel;
    let dir: string;
    let kv: KVTensors;
    let chunk: number[];
    const prompt = [5, 9, 14, 3];

    before(async () => {
      model = await testModel({ preferShipped: false });
      dir = await mkdtemp(join(tmpdir(), 'kdn-timeline-'));
      chunk = Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % 200);
      kv = await computedKV(model.dir, chunk);
    });

    after(async () => {
      await rm(dir, { recursive: true, force: true });
      await model.cleanup();
    });

    const inject = async (engine: Engine, timeline: boolean, fromFile = false) => {
      const session = engine.createSession({ capacity: 64 });
      try {
        const reader = fromFile
          ? fileReader(kv, engine.info.fingerprint, chunk, join(dir, `chunk-${Math.random()}`))
          : await fp16Reader(kv, engine.info.fingerprint, chunk);
        return await session.injectKVAndPrefill([reader], prompt, { timeline });
      } finally {
        session.dispose();
      }
    };

    const blend = async (engine: Engine, timeline: boolean) => {
      const session = engine.createSession({ capacity: 64 });
      try {
        const object = await fp16Reader(kv, engine.info.fingerprint, chunk);
        return await session.blendKVAndPrefill([{ object, tokenIds: chunk }], prompt, { ratio: 0.25, selection: 'deviation', timeline });
      } finally {
        session.dispose();
      }
    };

    it('cpu engine on its own thread, blended: the gates and the placing, only when asked for', async () => {
      const engine = await createEngineInWorker({ modelDir: model.dir, backend: 'cpu' });
      try {
        expect((await blend(engine, false)).timeline).to.equal(undefined);
        const { timeline, recomputed } = await blend(engine, true);
        expect(recomputed).to.be.greaterThan(0);
        expectGatesCover(timeline!, kv.layers);
        expect(timeline!.logitsMs).to.be.at.least(gates(timeline!).at(-1)!.flushedMs);
      } finally {
        await engine.dispose();
      }
    });

    for (const where of ['this thread', 'its own thread'] as const) {
      it(`cpu engine on ${where}: the gates, the placing and the logits, only when asked for`, async () => {
        const engine =
          where === 'this thread'
            ? await createEngine({ modelDir: model.dir, backend: 'cpu' })
            : await createEngineInWorker({ modelDir: model.dir, backend: 'cpu' });
        try {
          expect((await inject(engine, false)).timeline).to.equal(undefined);
          const { timeline } = await inject(engine, true);
          expectGatesCover(timeline!, kv.layers);
          expect(timeline!.firstLayerMs).to.be.within(0, timeline!.placedMs!);
          expect(timeline!.logitsMs).to.be.at.least(gates(timeline!).at(-1)!.flushedMs);
          // The cpu backend runs the forward once its context is in: no pieces, no uploads.
          expect(pieces(timeline!)).to.deep.equal([]);
          expect(uploads(timeline!)).to.deep.equal([]);
          const ready = timeline!.layersReadyMs;
          expect(ready).to.have.length(kv.layers);
          for (const [layer, ms] of ready.entries()) {
            expect(ms, `layer ${layer}`)
              .to.be.a('number')
              .and.within(layer === 0 ? 0 : ready[layer - 1]!, timeline!.logitsMs!);
          }
          // Only an engine on its own thread receives the blocks, so only it knows when they came; none before it was written.
          const arrived = timeline!.layersArrivedMs;
          if (where === 'this thread') expect(arrived).to.equal(undefined);
          else {
            expect(arrived).to.have.length(kv.layers);
            for (const [layer, ms] of arrived!.entries())
              expect(ms, `layer ${layer}`)
                .to.be.a('number')
                .and.at.most(ready[layer]! + 0.01);
          }
        } finally {
          await engine.dispose();
        }
      });
    }

    it('webgpu engine: pieces covering every layer, done after submitted; uploads and reads of file blocks; the pieces of a blended prefill (skips without an adapter)', async function () {
      const engine = await openOrSkip(this, () => createEngine({ modelDir: model.dir, backend: 'webgpu' }));
      try {
        const { timeline } = await inject(engine, true, true);
        const report = timeline!;
        expectGatesCover(report, kv.layers);
        const run = pieces(report);
        expect(run.length).to.be.greaterThan(0);
        expect(run[0]!.from).to.equal(0);
        expect(run.at(-1)!.to).to.equal(kv.layers);
        for (const [i, p] of run.entries()) {
          if (i > 0) expect(p.from).to.equal(run[i - 1]!.to);
          expect(p.doneMs, `piece ${p.from}-${p.to}`).to.be.a('number').and.at.least(p.submittedMs);
        }
        const sent = uploads(report);
        expect(sent.reduce((n, u) => n + u.bytes, 0)).to.be.at.least(kv.layers * 2 * kv.kvHeads * kv.headDim * kv.tokens * 2);
        expect(sent.reduce((n, u) => n + u.dispatches, 0)).to.be.greaterThan(0);
        expect(report.reads!.count).to.equal(kv.layers);
        expect(report.reads!.lastDoneMs).to.be.at.most(report.logitsMs!);

        // A blended prefill: a piece (or more, one per chunk of rows) for every layer, each run after it was sent.
        const blended = (await blend(engine, true)).timeline!;
        expectGatesCover(blended, kv.layers);
        const layerPieces = pieces(blended);
        for (const p of layerPieces) {
          expect(p.to - p.from).to.equal(1);
          expect(p.doneMs, `blend piece of layer ${p.from}`).to.be.a('number').and.at.least(p.submittedMs);
        }
        expect([...new Set(layerPieces.map((p) => p.from))].sort((a, b) => a - b)).to.deep.equal([...Array(kv.layers).keys()]);
        expect(uploads(blended).reduce((n, u) => n + u.bytes, 0)).to.be.greaterThan(0);
      } finally {
        await engine.dispose();
      }
    });
  });
});
