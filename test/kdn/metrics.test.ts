/**
 * kdn's metrics registry (kdn/api/metrics.ts) reads the engine's work once per scrape; an engine that cannot answer
 * leaves its last figures and does not fail the scrape. The fetch threads' spool counters are read the same way.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { expect } from 'chai';
import { KdnMetrics } from '../../kdn/api/metrics.ts';
import { ENGINE_CALLS, noKvWrites, WorkMeter, type EngineWork } from '../../engine-adapter/index.ts';

describe('kdn metrics: the engine work and spool counters', () => {
  it('report the engine work once per scrape, and keep the last figures while the engine cannot answer', async () => {
    const meter = new WorkMeter();
    let reads = 0;
    let failing = false;
    const metrics = new KdnMetrics(async (): Promise<EngineWork> => {
      reads++;
      if (failing) throw new Error('the engine thread exited');
      return meter.snapshot(7, {
        blocks: 64,
        bytes: 4096,
        stageSeconds: 0.5,
        readBlocks: 16,
        submitSeconds: 0.25,
        waitSeconds: 0.125,
        submits: 3,
        dispatches: 40,
      });
    });
    await meter.time('forward', () => new Promise((resolve) => setTimeout(resolve, 20)));
    await meter.time('batchForward', async () => undefined);
    const first = await metrics.registry.metrics();
    expect(reads, 'one read for all the engine counters').to.equal(1);
    expect(first).to.match(/^kdn_engine_calls_total\{call="forward"\} 1$/m);
    expect(first).to.match(/^kdn_engine_calls_total\{call="batchForward"\} 1$/m);
    expect(first).to.match(/^kdn_engine_batch_sequences_total 7$/m);
    expect(first).to.match(/^kdn_engine_kv_blocks_total 64$/m);
    expect(first).to.match(/^kdn_engine_kv_bytes_total 4096$/m);
    expect(first).to.match(/^kdn_engine_kv_write_seconds_total\{part="stage"\} 0.5$/m);
    expect(first).to.match(/^kdn_engine_kv_write_seconds_total\{part="wait"\} 0.125$/m);
    const busy = Number(/^kdn_engine_busy_seconds_total\{call="forward"\} (\S+)$/m.exec(first)?.[1]);
    expect(busy).to.be.within(0.015, 5);
    // This thread's event loop, the one the meter was read on: it ran the test for a while, idle through the timer.
    const loop = (state: string) =>
      Number(new RegExp(`^kdn_engine_loop_seconds_total\\{state="${state}"\\} (\\S+)$`, 'm').exec(first)?.[1]);
    expect(loop('active')).to.be.greaterThan(0);
    expect(loop('idle')).to.be.greaterThan(0.015);
    for (const call of ENGINE_CALLS) expect(first).to.contain(`kdn_engine_calls_total{call="${call}"}`);

    failing = true;
    // A scrape's read is shared until the event loop turns: the next scrape reads again.
    await new Promise((resolve) => setImmediate(resolve));
    const second = await metrics.registry.metrics();
    expect(reads).to.equal(2);
    expect(second).to.contain('kdn_http_requests_total');
    expect(second).to.match(/^kdn_engine_calls_total\{call="forward"\} 1$/m);
  });

  it("count the full garbage collections on the engine's thread and their pauses", async () => {
    const meter = new WorkMeter();
    const scrape = async (): Promise<{ full: number; seconds: number }> => {
      const text = await new KdnMetrics(async () => meter.snapshot(0, noKvWrites())).registry.metrics();
      return {
        full: Number(/^kdn_engine_full_gcs_total (\S+)$/m.exec(text)?.[1]),
        seconds: Number(/^kdn_engine_gc_seconds_total (\S+)$/m.exec(text)?.[1]),
      };
    };
    const before = await scrape();
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    gc();
    // perf_hooks delivers the collections' entries after them, on a later turn of the event loop.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const after = await scrape();
    expect(after.full - before.full).to.be.at.least(2);
    expect(after.seconds).to.be.greaterThan(before.seconds);
  });

  it("report what the fetch threads' spools took, read at every scrape", async () => {
    const stats = { spooledBytes: 1024, sentBytes: 96, failures: 0 };
    const metrics = new KdnMetrics();
    metrics.watchSpool(() => stats);
    const first = await metrics.registry.metrics();
    expect(first).to.match(/^kdn_fetch_spool_bytes_total\{outcome="spooled"\} 1024$/m);
    expect(first).to.match(/^kdn_fetch_spool_bytes_total\{outcome="sent"\} 96$/m);
    expect(first).to.match(/^kdn_fetch_spool_failures_total 0$/m);
    Object.assign(stats, { spooledBytes: 2048, failures: 1 });
    const second = await metrics.registry.metrics();
    expect(second).to.match(/^kdn_fetch_spool_bytes_total\{outcome="spooled"\} 2048$/m);
    expect(second).to.match(/^kdn_fetch_spool_failures_total 1$/m);
  });
});
