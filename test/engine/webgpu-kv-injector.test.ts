import { expect } from 'chai';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileIdentity } from '../../storage/kv-object/index.ts';
import type { KVBlockSource } from '../../storage/kv-object/types.ts';
import { BlockFiles } from '../../engine-adapter/webgpu/block-files.ts';
import type { KdnError } from '../../common/errors.ts';
import { fromHalfBits, writeHalves } from '../../storage/kv-object/half.ts';
import type { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { recordKvDequantFp16 } from '../../engine-adapter/webgpu/kernels/kv-dequant-fp16.ts';
import { MAX_JOBS } from '../../engine-adapter/webgpu/kernels/expand-jobs.ts';
import { KvInjector, type Expander } from '../../engine-adapter/webgpu/kv-injector.ts';
import { openContextOrSkip, randomArray } from './webgpu-support.ts';

/** An fp16 layer block (keys then values) of `n` elements each, and the f32 values it expands to. */
function block(n: number, seed: number): { bytes: Uint8Array; keys: Float32Array; values: Float32Array } {
  const keys = randomArray(n, seed);
  const values = randomArray(n, seed + 1000);
  const bytes = new Uint8Array(4 * n);
  writeHalves(keys, bytes, 0);
  writeHalves(values, bytes, 2 * n);
  const view = new DataView(bytes.buffer);
  const half = (at: number): number => fromHalfBits(view.getUint16(at, true));
  return { bytes, keys: Float32Array.from(keys, (_, i) => half(2 * i)), values: Float32Array.from(values, (_, i) => half(2 * n + 2 * i)) };
}

/** An fp16 block for the caches `keys` and `values` (labelled uniquely), at float index dstOffset. */
interface Fp16Job {
  keys: GPUBuffer;
  values: GPUBuffer;
  n: number;
  dstOffset: number;
}

/** Batches blocks by target and size, as the backend's layer expander does by cache layer, codec and length. */
function fp16Expander(ctx: GpuContext): Expander<Fp16Job> {
  return {
    batchKey: (j) => `${j.keys.label}/${j.n}`,
    record(rec, src, batch) {
      const { keys, values, n } = batch[0]!.job;
      const jobs = batch.map((s) => ({ srcOffset: s.offset, dstOffset: s.job.dstOffset }));
      recordKvDequantFp16(ctx, rec, { src, keys, values, n, jobs });
    },
  };
}

describe('webgpu KV injector: staged uploads expanded on the GPU', () => {
  let ctx: GpuContext;

  before(async function () {
    ctx = await openContextOrSkip(this);
  });
  after(() => ctx?.dispose());

  async function read(buffer: GPUBuffer, floats: number): Promise<Float32Array> {
    return new Float32Array(await ctx.read(buffer, 0, floats * 4));
  }

  // 1 KiB staging buffers in a 4 KiB pool against blocks of 256-768 bytes: the blocks fill a buffer every one to four
  // writes, so the pool of four goes round many times, waiting for buffers the GPU finished with; an upload ring of
  // at most 2.5 KiB grows once, then starts over every two buffers, one of 1 KiB at every buffer, with blocks not yet
  // expanded in it each time.
  // With the default sizes all of them wait in one, and each size's batch outgrows one dispatch's MAX_JOBS.
  for (const sizes of [{ slot: 1024, pool: 4096 }, { slot: 1024, pool: 4096, ring: 2560 }, { slot: 1024, pool: 4096, ring: 1024 }, {}]) {
    it(`lands every block where its job put it (${sizes.slot ?? 'default'}-byte staging buffers, ${sizes.ring ?? 'default'}-byte ring)`, async () => {
      const injector = new KvInjector(ctx, fp16Expander(ctx), sizes);
      const n = 256;
      const blocks = Array.from({ length: 3 * MAX_JOBS + 6 }, (_, i) => block((n * (1 + (i % 3))) / 4, i + 1));
      expect(blocks.filter((b) => b.keys.length === n / 4).length).to.be.above(MAX_JOBS);
      const total = blocks.reduce((s, b) => s + b.keys.length, 0);
      const keys = ctx.storage(total * 4, 'keys');
      const values = ctx.storage(total * 4, 'values');
      let at = 0;
      for (const b of blocks) {
        await injector.write(b.bytes, { keys, values, n: b.keys.length, dstOffset: at });
        at += b.keys.length;
      }
      await injector.settle();
      const [gotK, gotV] = [await read(keys, total), await read(values, total)];
      at = 0;
      for (const [i, b] of blocks.entries()) {
        expect([...gotK.subarray(at, at + b.keys.length)], `block ${i} keys`).to.deep.equal([...b.keys]);
        expect([...gotV.subarray(at, at + b.values.length)], `block ${i} values`).to.deep.equal([...b.values]);
        at += b.keys.length;
      }
      await injector.destroy();
    });
  }

  it('two writers interleaving (two sessions injecting at once) each land their own blocks', async () => {
    const injector = new KvInjector(ctx, fp16Expander(ctx), { slot: 1024, pool: 4096 });
    const n = 192;
    const targets = [0, 1].map((w) => ({
      blocks: Array.from({ length: 12 }, (_, i) => block(n, 100 * (w + 1) + i)),
      keys: ctx.storage(12 * n * 4, `keys ${w}`),
      values: ctx.storage(12 * n * 4, `values ${w}`),
    }));
    await Promise.all(
      targets.map(async (t) => {
        for (const [i, b] of t.blocks.entries()) {
          await injector.write(b.bytes, { keys: t.keys, values: t.values, n, dstOffset: i * n });
        }
      }),
    );
    await injector.settle();
    for (const [w, t] of targets.entries()) {
      const [gotK, gotV] = [await read(t.keys, 12 * n), await read(t.values, 12 * n)];
      t.blocks.forEach((b, i) => {
        expect([...gotK.subarray(i * n, (i + 1) * n)], `writer ${w} block ${i} keys`).to.deep.equal([...b.keys]);
        expect([...gotV.subarray(i * n, (i + 1) * n)], `writer ${w} block ${i} values`).to.deep.equal([...b.values]);
      });
    }
    await injector.destroy();
  });

  it('a flush uploads the staged bytes in the submission that expands them: one submission, not two', async () => {
    const injector = new KvInjector(ctx, fp16Expander(ctx));
    const b = block(256, 21);
    const keys = ctx.storage(256 * 4, 'one-submission keys');
    const values = ctx.storage(256 * 4, 'one-submission values');
    await injector.write(b.bytes, { keys, values, n: 256, dstOffset: 0 });
    const queue = ctx.device.queue;
    const submit = queue.submit.bind(queue);
    let submissions = 0;
    queue.submit = (buffers) => {
      submissions++;
      submit(buffers);
    };
    try {
      injector.flush();
    } finally {
      queue.submit = submit;
    }
    expect(submissions).to.equal(1);
    await injector.settle();
    expect([...(await read(keys, 256))]).to.deep.equal([...b.keys]);
    expect([...(await read(values, 256))]).to.deep.equal([...b.values]);
    await injector.destroy();
  });

  it('takes a block larger than its staging buffers and its ring (a buffer of that size joins the pool, the ring grows)', async () => {
    const injector = new KvInjector(ctx, fp16Expander(ctx), { slot: 1024, pool: 4096, ring: 4096 });
    const small = block(128, 8);
    const smallKeys = ctx.storage(128 * 4, 'small keys');
    const smallValues = ctx.storage(128 * 4, 'small values');
    // Staged before the ring is replaced: expanded from the old ring.
    await injector.write(small.bytes, { keys: smallKeys, values: smallValues, n: 128, dstOffset: 0 });
    const b = block(2048, 7);
    const keys = ctx.storage(2048 * 4, 'keys');
    const values = ctx.storage(2048 * 4, 'values');
    await injector.write(b.bytes, { keys, values, n: 2048, dstOffset: 0 });
    await injector.settle();
    expect([...(await read(keys, 2048))]).to.deep.equal([...b.keys]);
    expect([...(await read(values, 2048))]).to.deep.equal([...b.values]);
    expect([...(await read(smallKeys, 128))]).to.deep.equal([...small.keys]);
    expect([...(await read(smallValues, 128))]).to.deep.equal([...small.values]);
    await injector.destroy();
  });

  describe("blocks read from their source file on libuv's pool", () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'kdn-injector-'));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    /** `blocks` laid end to end in a file, and each one's source in it. */
    function fileOf(name: string, blocks: { bytes: Uint8Array }[]): KVBlockSource[] {
      const path = join(dir, name);
      writeFileSync(path, Buffer.concat(blocks.map((b) => b.bytes)));
      const identity = fileIdentity(statSync(path));
      let position = 0;
      return blocks.map((b) => {
        const source = { path, identity, position, length: b.bytes.length };
        position += b.bytes.length;
        return source;
      });
    }

    // Eight streams write at once, as an injected context's objects do, so reads are in flight whenever a staging
    // buffer fills, the ring starts over or grows, or a flush comes: each of those waits for them.
    for (const sizes of [{ slot: 1024, pool: 4096 }, { slot: 1024, pool: 4096, ring: 2560 }, {}]) {
      it(`lands what the file holds, not the bytes passed beside it or none (${sizes.slot ?? 'default'}-byte staging buffers, ${sizes.ring ?? 'default'}-byte ring)`, async () => {
        const injector = new KvInjector(ctx, fp16Expander(ctx), { ...sizes, files: new BlockFiles() });
        const n = 96;
        const streams = Array.from({ length: 8 }, (_, s) => {
          const blocks = Array.from({ length: 6 }, (_, i) => block(n, 500 + 10 * s + i));
          return { blocks, sources: fileOf(`stream-${s}-${JSON.stringify(sizes)}`, blocks) };
        });
        const keys = ctx.storage(8 * 6 * n * 4, 'file keys');
        const values = ctx.storage(8 * 6 * n * 4, 'file values');
        // The bytes passed are zeros, or none (odd streams' blocks are file blocks): what lands can only have come
        // from the file.
        const zeros = new Uint8Array(4 * n);
        const flushes: Promise<void>[] = [];
        await Promise.all(
          streams.map(async ({ sources }, s) => {
            for (const [i, source] of sources.entries()) {
              const job = { keys, values, n, dstOffset: (6 * s + i) * n };
              const writing = s % 2 === 0 ? injector.write(zeros, job, source) : injector.writeFrom(source, job);
              if (i === 2) flushes.push(injector.flush());
              await writing;
            }
          }),
        );
        await Promise.all(flushes);
        await injector.settle();
        const [gotK, gotV] = [await read(keys, 8 * 6 * n), await read(values, 8 * 6 * n)];
        for (const [s, { blocks }] of streams.entries())
          for (const [i, b] of blocks.entries()) {
            const at = (6 * s + i) * n;
            expect([...gotK.subarray(at, at + n)], `stream ${s} block ${i} keys`).to.deep.equal([...b.keys]);
            expect([...gotV.subarray(at, at + n)], `stream ${s} block ${i} values`).to.deep.equal([...b.values]);
          }
        expect(injector.work().readBlocks).to.equal(48);
        await injector.destroy();
      });
    }

    it('copies the bytes passed when the path names another file than the one they were verified from, or none', async () => {
      const injector = new KvInjector(ctx, fp16Expander(ctx), { files: new BlockFiles() });
      const n = 64;
      const [kept, replaced, gone] = [block(n, 71), block(n, 72), block(n, 73)];
      const sources = fileOf('replaced', [replaced]);
      // Same name and size, other bytes: a file written over the verified one's name.
      const path = sources[0]!.path;
      rmSync(path);
      writeFileSync(path, new Uint8Array(replaced.bytes.length).fill(0x3c));
      const keys = ctx.storage(3 * n * 4, 'fallback keys');
      const values = ctx.storage(3 * n * 4, 'fallback values');
      await injector.write(kept.bytes, { keys, values, n, dstOffset: 0 }, fileOf('kept', [kept])[0]);
      await injector.write(replaced.bytes, { keys, values, n, dstOffset: n }, sources[0]);
      await injector.write(
        gone.bytes,
        { keys, values, n, dstOffset: 2 * n },
        { path: join(dir, 'missing'), identity: '0:0:0:0', position: 0, length: gone.bytes.length },
      );
      await injector.settle();
      const [gotK, gotV] = [await read(keys, 3 * n), await read(values, 3 * n)];
      for (const [i, b] of [kept, replaced, gone].entries()) {
        expect([...gotK.subarray(i * n, (i + 1) * n)], `block ${i} keys`).to.deep.equal([...b.keys]);
        expect([...gotV.subarray(i * n, (i + 1) * n)], `block ${i} values`).to.deep.equal([...b.values]);
      }
      expect(injector.work().readBlocks).to.equal(1);
      await injector.destroy();
    });

    it('a block without bytes whose file was replaced or removed fails at once (EDGE_UNAVAILABLE), staging nothing', async () => {
      const injector = new KvInjector(ctx, fp16Expander(ctx), { files: new BlockFiles() });
      const n = 64;
      const [replaced, gone] = [block(n, 74), block(n, 75)];
      const [source] = fileOf('replaced-file-block', [replaced]);
      rmSync(source!.path);
      writeFileSync(source!.path, replaced.bytes);
      const keys = ctx.storage(n * 4, 'file block keys');
      const values = ctx.storage(n * 4, 'file block values');
      const job = { keys, values, n, dstOffset: 0 };
      for (const from of [source!, { path: join(dir, 'missing'), identity: '0:0:0:0', position: 0, length: gone.bytes.length }]) {
        const failed = await injector.writeFrom(from, job).then(
          () => null,
          (err: unknown) => err as KdnError,
        );
        expect(failed?.code).to.equal('EDGE_UNAVAILABLE');
      }
      await injector.settle();
      expect(injector.work()).to.deep.include({ blocks: 0, readBlocks: 0 });
      await injector.destroy();
    });

    it('without BlockFiles, a block without bytes is read from its file on this thread', async () => {
      const injector = new KvInjector(ctx, fp16Expander(ctx));
      const n = 64;
      const b = block(n, 76);
      const keys = ctx.storage(n * 4, 'read keys');
      const values = ctx.storage(n * 4, 'read values');
      await injector.writeFrom(fileOf('read-here', [b])[0]!, { keys, values, n, dstOffset: 0 });
      await injector.settle();
      expect([...(await read(keys, n))]).to.deep.equal([...b.keys]);
      expect([...(await read(values, n))]).to.deep.equal([...b.values]);
      await injector.destroy();
    });

    it('a read that fails fails the settle that sends its block (KV_CORRUPT), not the writes after it', async () => {
      const injector = new KvInjector(ctx, fp16Expander(ctx), { files: new BlockFiles() });
      const n = 64;
      const [b, later] = [block(n, 91), block(n, 92)];
      const keys = ctx.storage(2 * n * 4, 'failing keys');
      const values = ctx.storage(2 * n * 4, 'failing values');
      // The file is the one named, but ends where the block would start: the read comes short.
      const [source] = fileOf('short', [b]);
      await injector.write(b.bytes, { keys, values, n, dstOffset: 0 }, { ...source!, position: b.bytes.length });
      const failed = await injector.settle().then(
        () => null,
        (err: unknown) => err as KdnError,
      );
      expect(failed?.code).to.equal('KV_CORRUPT');
      await injector.write(later.bytes, { keys, values, n, dstOffset: n }, fileOf('later', [later])[0]);
      await injector.settle();
      expect([...(await read(keys, 2 * n)).subarray(n)]).to.deep.equal([...later.keys]);
      await injector.destroy();
    });

    it('releases what a batch writes to only once that batch, held back by reads in flight, is submitted', async () => {
      const injector = new KvInjector(ctx, fp16Expander(ctx), { files: new BlockFiles() });
      const n = 64;
      const [first, b] = [block(n, 80), block(n, 81)];
      const keys = ctx.storage(2 * n * 4, 'released keys');
      const values = ctx.storage(2 * n * 4, 'released values');
      await injector.write(first.bytes, { keys, values, n, dstOffset: 0 });
      // Resolves once the read is asked for: it is on libuv's pool, and cannot be done before this thread's next turn.
      await injector.write(new Uint8Array(b.bytes.length), { keys, values, n, dstOffset: n }, fileOf('released', [b])[0]);
      let released = false;
      injector.whenSubmitted(() => (released = true));
      expect(released).to.equal(false);
      await injector.settle();
      expect(released).to.equal(true);
      expect([...(await read(keys, 2 * n))]).to.deep.equal([...first.keys, ...b.keys]);
      await injector.destroy();
    });
  });
});
