/**
 * What a `kdn serve` engine was busy with over a stretch of a benchmark, read from its Prometheus metrics
 * (kdn/api/metrics.ts, engine-adapter/engine-work.ts): the server must run with KDN_METRICS_PUBLIC=true.
 */
import { ENGINE_CALLS, type EngineCall } from '../../engine-adapter/index.ts';
import { round } from './stats.ts';

interface EngineCounters {
  seconds: Record<EngineCall, number>;
  calls: Record<EngineCall, number>;
  batchSequences: number;
}

async function readCounters(url: string): Promise<EngineCounters> {
  const res = await fetch(`${url}/metrics`);
  if (!res.ok) throw new Error(`GET ${url}/metrics: HTTP ${res.status} (start kdn with KDN_METRICS_PUBLIC=true)`);
  const text = await res.text();
  const value = (name: string, call?: EngineCall): number => {
    const series = call === undefined ? name : `${name}{call="${call}"}`;
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    if (line === undefined) throw new Error(`${url}/metrics has no ${series}`);
    return Number(line.slice(series.length + 1));
  };
  const perCall = (name: string): Record<EngineCall, number> =>
    Object.fromEntries(ENGINE_CALLS.map((c) => [c, value(name, c)])) as Record<EngineCall, number>;
  return {
    seconds: perCall('kdn_engine_busy_seconds_total'),
    calls: perCall('kdn_engine_calls_total'),
    batchSequences: value('kdn_engine_batch_sequences_total'),
  };
}

/** Starts watching `url`'s engine; `stop(wallSeconds, queries)` gives the engine's share of that time and its calls. */
export async function watchEngine(url: string): Promise<{ stop(wallSeconds: number, queries: number): Promise<Record<string, number>> }> {
  const before = await readCounters(url);
  return {
    async stop(wallSeconds, queries) {
      const after = await readCounters(url);
      const out: Record<string, number> = {};
      let busy = 0;
      for (const call of ENGINE_CALLS) {
        const seconds = after.seconds[call] - before.seconds[call];
        const calls = after.calls[call] - before.calls[call];
        busy += seconds;
        if (calls === 0) continue;
        out[`engine_${call}_per_query`] = round(calls / Math.max(1, queries), 3);
        out[`engine_${call}_ms_each`] = round((seconds * 1000) / calls, 3);
      }
      const steps = after.calls.batchForward - before.calls.batchForward;
      if (steps > 0) out.engine_sequences_per_step = round((after.batchSequences - before.batchSequences) / steps, 3);
      out.engine_busy_share = round(busy / wallSeconds, 3);
      return out;
    },
  };
}
