import { isKdnError } from '../../common/errors.ts';
import { kvBeforeRope, loadModelConfig } from '../../engine-adapter/index.ts';
import { codecEntry, codecFromString, codecToString, encodeKVObject, tokenHash, verifyKVObject } from '../../storage/kv-object/index.ts';
import type { CodecSpec, KVExpectation, KVTensors } from '../../storage/kv-object/types.ts';
import type { EngineScheduler } from '../scheduler/engine-scheduler.ts';
import type { ChunkObjects, Manifest } from '../manifest.ts';
import { computeChainedKV, computeIndependentKV, type ChunkPlan } from './compute-kv.ts';
import type { IngestContext } from './ingest-document.ts';

/** The scheduler's tenant for repairs, which serve every tenant. */
const REPAIR_TENANT = 'kdn:repair';

/** How a reported object ended up. */
export type RepairOutcome = 'intact' | 'from-edge' | 'recomputed' | 'unknown-key' | 'failed';

/**
 * Rewrites chunk objects found corrupt at the origin. A query that meets a KV_CORRUPT object computes its chunk
 * instead and reports the key here; the origin copy is checked again (a copy damaged on the way is not the
 * origin's fault), then replaced by a verified copy an edge still holds in a tier, or else by the object computed
 * again from the manifest's tokens on the engine scheduler. One repair per key at a time; every answer is verified
 * before it is written.
 */
export class ChunkRepair {
  private readonly running = new Map<string, Promise<RepairOutcome>>();
  /**
   * Keys waiting to be computed again, by document: every key of a document reported before its turn on the engine
   * comes is computed in one pass, so a chain is prefilled once rather than once per damaged object.
   */
  private readonly batches = new Map<string, { keys: Map<string, KVExpectation>; done: Promise<void> }>();
  /** Counts by outcome, for /metrics and tests. */
  readonly outcomes: Record<RepairOutcome, number> = { intact: 0, 'from-edge': 0, recomputed: 0, 'unknown-key': 0, failed: 0 };

  constructor(
    private readonly ctx: Omit<IngestContext, 'turn'>,
    private readonly scheduler: EngineScheduler,
  ) {}

  /** Starts repairing `key` unless a repair of it is already running; the promise is for tests and callers that wait. */
  report(key: string): Promise<RepairOutcome> {
    let running = this.running.get(key);
    if (!running) {
      running = this.repair(key)
        .catch((err: unknown) => {
          this.ctx.log.warn({ key, err }, 'could not repair a corrupt chunk object');
          return 'failed' as const;
        })
        .then((outcome) => {
          this.outcomes[outcome] += 1;
          this.running.delete(key);
          if (outcome === 'from-edge' || outcome === 'recomputed')
            this.ctx.log.info({ key, outcome }, 'repaired a corrupt chunk object at the origin');
          return outcome;
        });
      this.running.set(key, running);
    }
    return running;
  }

  private async repair(key: string): Promise<RepairOutcome> {
    const found = this.findChunk(key);
    if (!found) return 'unknown-key';
    const expect = found.expect;
    if (await this.originIntact(key, expect)) return 'intact';
    const copy = await this.verifiedEdgeCopy(key, expect);
    if (copy) {
      await this.ctx.origin.put(key, copy, { contentLength: copy.length });
      return 'from-edge';
    }
    if (found.manifest.modelFingerprint !== this.ctx.engine.info.fingerprint) return 'failed';
    await this.recomputeInBatch(found.manifest, found.level, key, expect);
    return 'recomputed';
  }

  private async originIntact(key: string, expect: KVExpectation): Promise<boolean> {
    try {
      verifyKVObject(await this.ctx.origin.get(key), expect);
      return true;
    } catch (err) {
      if (
        isKdnError(err, 'NOT_FOUND') ||
        isKdnError(err, 'KV_CORRUPT') ||
        isKdnError(err, 'KV_MISMATCH') ||
        isKdnError(err, 'KV_UNSUPPORTED')
      )
        return false;
      throw err;
    }
  }

  /** The object from the tier of its owner edge that still holds it, verified here; null when no tier does. */
  private async verifiedEdgeCopy(key: string, expect: KVExpectation): Promise<Buffer | null> {
    try {
      if ((await this.ctx.edges.cachedAt(key)) === null) return null;
      const { body } = await this.ctx.edges.getBuffer(key);
      verifyKVObject(body, expect);
      return body;
    } catch {
      return null;
    }
  }

  /**
   * Resolves once `key` has been computed again, with the other keys of its document (at its level) reported by then.
   * `level` is the codec of the manifest's extra level the key belongs to, or null for the main codec.
   */
  private recomputeInBatch(manifest: Manifest, level: string | null, key: string, expect: KVExpectation): Promise<void> {
    const batchKey = `${manifest.id}:${level ?? ''}`;
    let batch = this.batches.get(batchKey);
    if (!batch) {
      const keys = new Map<string, KVExpectation>();
      const cost = manifest.chunks.reduce((n, c) => n + c.tokenIds.length, 0);
      // Background work of its own tenant: a repair waits behind queries and shares the engine fairly with ingest.
      const done = this.scheduler.run(
        () => {
          // Keys reported from now on wait for the next pass.
          this.batches.delete(batchKey);
          return this.recompute(manifest, level, keys);
        },
        { tenant: REPAIR_TENANT, priority: 'background', cost },
      );
      batch = { keys, done };
      this.batches.set(batchKey, batch);
    }
    batch.keys.set(key, expect);
    return batch.done;
  }

  /** Computes the objects again (a chain's prefix rebuilt once) and stores each, verified, through its edge. */
  private async recompute(manifest: Manifest, level: string | null, keys: ReadonlyMap<string, KVExpectation>): Promise<void> {
    const { engine } = this.ctx;
    const codec = this.runningCodec(level ?? manifest.codec);
    const rope = codecEntry(codec.name).keysBeforeRope ? await loadModelConfig(engine.info.path) : undefined;
    const plans: ChunkPlan[] = manifest.chunks.map((c) => {
      const objects = level === null ? c : c.levels!.find((l) => l.codec === level)!;
      return { index: c.index, tokenIds: c.tokenIds, independentKey: objects.independent.key, chainedKey: objects.chained?.key ?? null };
    });
    const pending = new Set(keys.keys());
    const sink = {
      pending,
      save: async (key: string, tensors: KVTensors, ids: number[]): Promise<void> => {
        const object = encodeKVObject(rope ? kvBeforeRope(tensors, rope) : tensors, {
          modelFingerprint: engine.info.fingerprint,
          tokenIds: ids,
          codec,
        });
        verifyKVObject(object, keys.get(key));
        await this.store(key, object);
        pending.delete(key);
      },
    };
    await computeChainedKV(engine, plans, sink);
    await computeIndependentKV(engine, plans, sink);
    if (pending.size > 0) throw new Error(`${[...pending].join(', ')} were not computed`);
  }

  /** The running codec carries what a manifest's string cannot (a transform table's hash). */
  private runningCodec(name: string): CodecSpec {
    const running = [this.ctx.codec, ...(this.ctx.levels ?? [])].find((c) => codecToString(c) === name);
    return running ?? codecFromString(name);
  }

  /** Through the key's edge, which verifies it and writes it through to the origin; to the origin when no edge answers. */
  private async store(key: string, object: Buffer): Promise<void> {
    try {
      await this.ctx.edges.put(key, object);
    } catch (err) {
      if (!isKdnError(err, 'EDGE_UNAVAILABLE')) throw err;
      await this.ctx.origin.put(key, object, { contentLength: object.length });
    }
  }

  /** The manifest that references `key`, the extra level it is at (null: the main codec), and what it must match. */
  private findChunk(key: string): { manifest: Manifest; level: string | null; expect: KVExpectation } | undefined {
    const holds = (o: ChunkObjects): boolean => o.independent.key === key || o.chained?.key === key;
    for (const manifest of this.ctx.catalog.all()) {
      for (const chunk of manifest.chunks) {
        const level = holds(chunk) ? null : chunk.levels?.find(holds)?.codec;
        if (level === undefined) continue;
        return {
          manifest,
          level,
          expect: { modelFingerprint: manifest.modelFingerprint, tokens: chunk.tokenIds.length, tokenHash: tokenHash(chunk.tokenIds) },
        };
      }
    }
    return undefined;
  }
}
