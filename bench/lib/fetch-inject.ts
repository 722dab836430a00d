/**
 * The inject path of a query as the TTFT benchmark measures it: every chunk object is requested from the edge
 * in parallel (a bounded window ahead), and chunks are injected in order as soon as each has arrived, so transfer
 * overlaps injection.
 */
import type { EdgeClient } from '../../edge/client.ts';
import type { Session } from '../../engine-adapter/index.ts';
import { readKVObject } from '../../storage/kv-object/index.ts';
import { byteStream } from './byte-stream.ts';

export interface FetchInjectTiming {
  /** From the first request to the last body fully received. */
  fetchMs: number;
  /** Time the injector sat waiting for a body that had not arrived yet (the part of fetching not hidden). */
  fetchWaitMs: number;
  /** Time inside injectKV: verify, decode/dequantize, upload, re-rotation. */
  injectMs: number;
  bytes: number;
}

/** Fetches `keys` and injects them into `session` from its current length on; `window` bounds bodies held at once. */
export async function fetchAndInject(client: EdgeClient, keys: readonly string[], session: Session, window: number): Promise<FetchInjectTiming> {
  const t0 = performance.now();
  const inFlight: (Promise<{ body: Buffer; arrivedAt: number }> | undefined)[] = [];
  let launched = 0;
  const launch = (done: number): void => {
    while (launched < keys.length && launched - done < window) {
      const p = client.getBuffer(keys[launched]!).then((r) => ({ body: r.body, arrivedAt: performance.now() }));
      // Awaited in order below; this keeps a later failure from surfacing as unhandled while an earlier one waits.
      p.catch(() => undefined);
      inFlight[launched++] = p;
    }
  };
  const timing: FetchInjectTiming = { fetchMs: 0, fetchWaitMs: 0, injectMs: 0, bytes: 0 };
  let lastArrival = t0;
  for (let i = 0; i < keys.length; i++) {
    launch(i);
    const waitStart = performance.now();
    const { body, arrivedAt } = await inFlight[i]!;
    inFlight[i] = undefined;
    timing.fetchWaitMs += performance.now() - waitStart;
    lastArrival = Math.max(lastArrival, arrivedAt);
    timing.bytes += body.length;
    const injectStart = performance.now();
    const reader = await readKVObject(byteStream(body));
    await session.injectKV(reader, session.length);
    timing.injectMs += performance.now() - injectStart;
  }
  timing.fetchMs = lastArrival - t0;
  return timing;
}
