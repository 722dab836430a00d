import { expect } from 'chai';
import { createEngine, type Engine, type GateEvent, type PieceEvent, type PlacingTimelineReport } from '../../engine-adapter/index.ts';
import type { KVBlock, KVBlockReader, KVTensors, LayerVerification } from '../../storage/kv-object/types.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';
import { computedKV, fp16Reader } from './kv-readers.ts';
import { openOrSkip } from './webgpu-support.ts';

/**
 * Verification that catches up with its blocks (storage LayerVerification), as an announced object's does: `advance`
 * says how many leading layers are verified, and remembers when (epoch milliseconds, the timeline's clock).
 */
class LaggingVerification implements LayerVerification {
  through = 0;
  readonly at = new Map<number, number>();
  private readonly listeners: (() => void)[] = [];
  private finish!: () => void;
  /** Resolves once every layer is verified: the stream ends only then, as an announced one does. */
  readonly complete = new Promise<void>((resolve) => (this.finish = resolve));

  constructor(private readonly layers: number) {}

  onAdvance(listener: () => void): void {
    this.listeners.push(listener);
  }

  advance(through: number): void {
    this.through = through;
    if (!this.at.has(through)) this.at.set(through, performance.timeOrigin + performance.now());
    for (const listener of this.listeners) listener();
    if (through === this.layers) this.finish();
  }
}

/** `reader`'s blocks at once, verified only as `verification` advances; `endEarly` ends the stream without waiting. */
function announced(reader: KVBlockReader, verification: LaggingVerification, endEarly = false): KVBlockReader {
  async function* layers(): AsyncGenerator<KVBlock> {
    for await (const block of reader.layers) yield block;
    if (!endEarly) await verification.complete;
  }
  return { header: reader.header, layers: layers(), verification };
}

const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setTimeout(resolve, 10));
};

/** Every gate opened no earlier than the verification that let its layers run. */
function expectGatesAfterVerification(report: PlacingTimelineReport, v: LaggingVerification): void {
  const gates = report.events.filter((e): e is GateEvent => e.kind === 'gate');
  expect(gates.length).to.be.greaterThan(0);
  const verifiedAt = (layers: number): number => {
    const through = Math.min(...[...v.at.keys()].filter((t) => t >= layers));
    return v.at.get(through)! - report.startedAtEpoch;
  };
  for (const g of gates) expect(g.writtenMs, `gate through layer ${g.through}`).to.be.at.least(verifiedAt(g.through) - 1);
  for (const p of report.events.filter((e): e is PieceEvent => e.kind === 'piece')) {
    expect(p.submittedMs, `piece ${p.from}-${p.to}`).to.be.at.least(verifiedAt(p.to) - 1);
  }
}

describe('layers verified after they arrive (announced objects)', function () {
  this.timeout(120_000);
  let model: TestModel;
  let kv: KVTensors;
  let chunk: number[];
  const prompt = [5, 9, 14, 3];

  before(async () => {
    model = await testModel({ preferShipped: false });
    chunk = Array.from({ length: 24 }, (_, i) => (i * 11 + 5) % 200);
    kv = await computedKV(model.dir, chunk);
  });

  after(async () => {
    await model.cleanup();
  });

  async function checkEngine(engine: Engine): Promise<void> {
    const plain = engine.createSession({ capacity: 64 });
    const expected = await plain.injectKVAndPrefill([await fp16Reader(kv, engine.info.fingerprint, chunk)], prompt);
    plain.dispose();

    const session = engine.createSession({ capacity: 64 });
    const v = new LaggingVerification(kv.layers);
    const reader = announced(await fp16Reader(kv, engine.info.fingerprint, chunk), v);
    let settled = false;
    const call = session.injectKVAndPrefill([reader], prompt, { timeline: true }).finally(() => (settled = true));
    await turns(5);
    v.advance(1);
    await turns(5);
    expect(settled, 'the question waits for the rest of its context to verify').to.equal(false);
    v.advance(kv.layers - 1);
    await turns(5);
    expect(settled).to.equal(false);
    v.advance(kv.layers);
    const out = await call;
    expect(Array.from(out.logits)).to.deep.equal(Array.from(expected.logits));
    expectGatesAfterVerification(out.timeline!, v);
    expect(session.length).to.equal(chunk.length + prompt.length);
    session.dispose();
  }

  it('the cpu engine computes with a layer only once every copy of it is verified, answering as if verified first', async () => {
    const engine = await createEngine({ modelDir: model.dir, backend: 'cpu' });
    try {
      await checkEngine(engine);
    } finally {
      await engine.dispose();
    }
  });

  it('the webgpu engine runs no piece of the question before its layers are verified (skips without an adapter)', async function () {
    const engine = await openOrSkip(this, () => createEngine({ modelDir: model.dir, backend: 'webgpu' }));
    try {
      await checkEngine(engine);
    } finally {
      await engine.dispose();
    }
  });

  it('a stream that ends before its layers are verified fails the call, leaving the session as it was', async () => {
    const engine = await createEngine({ modelDir: model.dir, backend: 'cpu' });
    try {
      for (const call of ['injectKVAndPrefill', 'injectKV'] as const) {
        const session = engine.createSession({ capacity: 64 });
        const v = new LaggingVerification(kv.layers);
        v.advance(kv.layers - 1);
        const reader = announced(await fp16Reader(kv, engine.info.fingerprint, chunk), v, true);
        const attempt = call === 'injectKV' ? session.injectKV(reader, 0) : session.injectKVAndPrefill([reader], prompt);
        const err = await attempt.then(
          () => null,
          (e: unknown) => e as { code?: string; message: string },
        );
        expect(err?.code, call).to.equal('KV_CORRUPT');
        expect(err!.message).to.match(/verified/);
        expect(session.length, call).to.equal(0);
        session.dispose();
      }
    } finally {
      await engine.dispose();
    }
  });
});
