/**
 * A query's use of the engine's hot tier (engine-adapter/hot-tier.ts): the leading chunks it holds are placed by
 * reference, with nothing fetched; the chunks a query fetched are kept there afterwards for the next query. Only a
 * leading run is placed so: the chunks after it still arrive together with the prompt (overlap-policy.ts), which
 * needs them at consecutive positions after what the session holds.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../common/log.ts';
import type { Engine, ResidentKey, Session } from '../../engine-adapter/types.ts';
import { tokenHash } from '../../storage/kv-object/index.ts';
import { sinkToken, type SinkEngine } from '../sink-token.ts';
import type { ContextPiece } from './context-plan.ts';

/** Each piece's identity in the hot tier, under the query's tenant. */
export function residentKeys(run: { tenant: string; pieces: readonly ContextPiece[] }): ResidentKey[] {
  return run.pieces.map((p) => ({ tenant: run.tenant, objectKey: p.key, tokenHash: tokenHash(p.tokenIds) }));
}

/**
 * The sink token (sink-token.ts) as a hot-tier entry. Its KV is the same in every query of a model (the same token at
 * position 0, attending to itself alone), so one entry serves every tenant: it holds nothing a tenant sent. The
 * tenant '' is no tenant's id (api-keys.ts: ids are 1-63 characters).
 */
function sinkKey(engine: SinkEngine): ResidentKey {
  return { tenant: '', objectKey: 'sink', tokenHash: tokenHash([sinkToken(engine)]) };
}

/**
 * Places the sink at the session's start: by copies from the hot tier when it holds it, else by a prefill, which
 * on a large model costs a forward as long as a decode step. Returns whether it was computed (keepSinkResident).
 */
export async function placeSink(session: Session, engine: SinkEngine): Promise<boolean> {
  if (await session.injectResident(sinkKey(engine), session.length)) return false;
  await computeSink(session, engine);
  return true;
}

/** Places the sink by a prefill of its one token, as the hot tier's first query of a model does (placeSink). */
export async function computeSink(session: Session, engine: SinkEngine): Promise<void> {
  await session.prefill([sinkToken(engine)], { logits: 'none' });
}

/** Keeps the sink this session computed (its row 0) for the next queries; like keepFetchedResident, best effort. */
export async function keepSinkResident(session: Session, engine: SinkEngine, log: Logger): Promise<void> {
  try {
    await session.keepResident(sinkKey(engine), { start: 0, end: 1 });
  } catch (err) {
    log.warn({ err }, 'could not keep the sink token in the engine hot tier');
  }
}

/**
 * Places the sink (placeSink), then the leading pieces the hot tier holds after it (`resident`:
 * Session.residentChunks of `keys`). Returns how many were placed, whether the sink was computed, and the time of
 * each step.
 */
export async function placeResidentPrefix(
  session: Session,
  engine: Engine,
  keys: readonly ResidentKey[],
  resident: readonly boolean[],
): Promise<{ count: number; sinkComputed: boolean; sinkMs: number; injectMs: number }> {
  const sinkStart = performance.now();
  const sinkComputed = await placeSink(session, engine);
  const injectStart = performance.now();
  let count = 0;
  // Another query's chunk may have evicted an entry since the check: the run stops there and the rest is fetched.
  while (count < keys.length && resident[count] && (await session.injectResident(keys[count]!, session.length))) count++;
  return { count, sinkComputed, sinkMs: injectStart - sinkStart, injectMs: performance.now() - injectStart };
}

/**
 * Keeps the pieces that were fetched and injected (not computed, not already resident) in the hot tier, at their
 * rows in the session: [sink] then the pieces in order. A failure costs only the next query's fetch, so it is logged.
 */
export async function keepFetchedResident(
  session: Session,
  keys: readonly ResidentKey[],
  uses: readonly { tier: string; tokens: number }[],
  log: Logger,
): Promise<void> {
  let start = 1;
  for (const [i, u] of uses.entries()) {
    const end = start + u.tokens;
    if (u.tier !== 'computed' && u.tier !== 'engine') {
      try {
        await session.keepResident(keys[i]!, { start, end });
      } catch (err) {
        log.warn({ err }, 'could not keep a chunk in the engine hot tier');
        return;
      }
    }
    start = end;
  }
}
