/**
 * Batches KV injection. Layer blocks are copied into mapped staging buffers (a pool, mapped again when a write needs
 * one back or the writes settle), or read into them from their source file on libuv's pool (block-files.ts); each
 * staging buffer, once full or flushed and its reads done, is copied on the GPU into the next region of one
 * device-side upload ring. The blocks' expansion into the cache (dequantization, re-rotation) is recorded
 * later, when something needs it: a forward waiting on the cache (flush), a session settling its writes, or the ring
 * coming round to regions whose blocks are not expanded yet.
 *
 * Expansions are grouped by a key the caller gives (the same layer of the same cache, the same codec and length): one
 * dispatch then expands the blocks of many chunks, from every staging buffer filled since the last recording, since
 * they all lie in the one ring. Recording each staging buffer's blocks on its own gave about one dispatch per block,
 * as an object's layers arrive together, and each dispatch costs the host 20-40 us of recording and encoding; an
 * 8k-token 8B context is 1024 layer blocks.
 *
 * Why not queue.writeBuffer: on the H100 through Dawn/Vulkan it moves 0.5-0.7 GB/s, a reused mapped pool about
 * 4 GB/s (tools/gpu/upload-bandwidth.ts); and a staging buffer of many blocks costs one submission and one
 * error-scope check instead of one of each per block.
 */
import { KdnError } from '../../common/errors.ts';
import { readBlockSource, sourceGone } from '../../storage/kv-object/index.ts';
import type { KVBlock, KVBlockSource } from '../../storage/kv-object/types.ts';
import { noKvWrites, type KvWriteWork } from '../engine-work.ts';
import type { PlacingTimeline } from '../placing-timeline.ts';
import type { BlockFiles, HeldFile } from './block-files.ts';
import { withErrorScopes } from './device.ts';
import { Usage, type GpuContext, type Recorder } from './gpu-context.ts';

/**
 * Staging buffers of at least this size (larger when one block is larger). The pool grows, rather than waiting for a
 * buffer the GPU still reads from, up to POOL_BYTES; past that, writes wait for the buffer sent first. A prompt
 * running under its context's arrival (Session.injectKVAndPrefill) flushes a buffer per piece it waits on: with a
 * small pool every write then waited on the GPU's progress through the prompt, and placing the context lagged its
 * arrival by 50-100 ms (8B shape, 8k tokens, H200).
 */
const STAGING_BYTES = 16 * 1024 * 1024;
const POOL_BYTES = 256 * 1024 * 1024;
/**
 * The upload ring grows to this, unless the adapter's storage bindings are smaller (its expansions bind it whole). It
 * starts at a staging buffer's size.
 */
const RING_BYTES = 256 * 1024 * 1024;
/** Regions of the ring start on this boundary (a buffer copy's offset must be a multiple of 4, a job's of 16). */
const RING_ALIGN = 256;
/** Blocks start on 16-byte boundaries: the expansion kernels read whole words from them. */
const ALIGN = 16;
const MAP_WRITE = 0x2;
const MAP_MODE_WRITE = 0x2;

/** A host-writable staging buffer, and where in the upload ring its bytes go. */
interface Slot {
  staging: GPUBuffer;
  bytes: number;
  /** Bytes written or being read into it since it was last mapped. */
  used: number;
  /** The ring its bytes go to (the ring may be replaced while a full slot waits on its reads), and where in it. */
  ring: GPUBuffer | null;
  ringOffset: number;
  /** Reads from source files still filling it: it is sent only once they are done. */
  reads: number;
  drained: (() => void) | null;
  /** Full or flushed, waiting on its reads to be sent: no write may take it. */
  sealed: boolean;
  /** Why a read into it failed: its send fails with it (the jobs whose bytes it holds must not be used). */
  failure: KdnError | null;
  /**
   * Resolves once the staging buffer is mapped again (the GPU finished the batch that used it); null while it was
   * sent and its map not asked for yet. Maps are asked for only when a write needs a buffer back (and at settle): a
   * pending map keeps Dawn polling this thread's event loop until the GPU gets there (gpu-context.ts whenAwaited).
   */
  ready: Promise<void> | null;
  range: Uint8Array | null;
  /** When it was last sent to the GPU (a counter): the earliest sent is mapped again first. */
  sent: number;
}

export interface StagingSizes {
  /** Bytes per staging buffer (tests make it small to cycle the pool). */
  slot?: number;
  /** Bytes the pool grows to before writes wait for buffers the GPU still reads. */
  pool?: number;
  /** Bytes the upload ring grows to (tests make it small to wrap it often). */
  ring?: number;
}

export interface InjectorOptions extends StagingSizes {
  /** Where blocks that name a source file are read from (else their bytes are copied on this thread). */
  files?: BlockFiles;
}

/** A staged block's expansion job and the byte offset of its bytes in the upload ring. */
export interface Staged<J> {
  job: J;
  offset: number;
}

/** How a caller's jobs are grouped and recorded. */
export interface Expander<J> {
  /** Jobs with equal keys are recorded together, in the order written. */
  batchKey(job: J): string;
  /** Records one batch: its jobs' blocks are in `src` at their offsets. */
  record(rec: Recorder, src: GPUBuffer, batch: readonly Staged<J>[]): void;
}

export class KvInjector<J> {
  private readonly pool: Slot[] = [];
  private sends = 0;
  private readonly slotBytes: number;
  private readonly poolBytes: number;
  private readonly ringBytes: number;
  private ring: GPUBuffer | null = null;
  /** Where the next slot's region of the ring starts. */
  private ringEnd = 0;
  /** The slot being filled, and the batch recording the expansions that read it. */
  private current: Slot | null = null;
  private pending: Recorder | null = null;
  /**
   * Sends that wait on reads, in the order asked for (the GPU must see uploads and the batches reading them in that
   * order); while any waits, later sends queue behind it.
   */
  private waiting: Promise<void> = Promise.resolve();
  private queued = 0;
  private readonly files: BlockFiles | undefined;
  /** Jobs staged and not yet recorded, by batch key (a Map keeps the order written), their bytes in the ring. */
  private jobs = new Map<string, Staged<J>[]>();
  /** Error-scope checks of submitted batches not yet awaited. */
  private checks: Promise<void>[] = [];
  private readonly counts = noKvWrites();
  /** Where sends and reads are recorded while a forward that asked for a timeline runs (webgpu-backend.ts). */
  timeline: PlacingTimeline | null = null;

  constructor(
    private readonly ctx: GpuContext,
    private readonly expander: Expander<J>,
    options: InjectorOptions = {},
  ) {
    this.slotBytes = options.slot ?? STAGING_BYTES;
    this.poolBytes = options.pool ?? POOL_BYTES;
    this.ringBytes = Math.min(options.ring ?? RING_BYTES, ctx.maxStorageBytes);
    this.files = options.files;
  }

  /**
   * Stages `bytes` for `job`, expanded with its batch when next recorded. With a `source` (and a BlockFiles) that is
   * still the file the bytes were verified from, they are read from there on libuv's pool: this resolves as soon as
   * the read is asked for, and a read that fails fails the flush or settle that sends them. Otherwise they are
   * copied before this resolves. Either way `bytes` is not read after that.
   */
  async write(bytes: Uint8Array, job: J, source?: KVBlockSource): Promise<void> {
    const file = source !== undefined && this.files !== undefined ? await this.files.acquire(source) : null;
    await this.stage(bytes.length, job, file === null ? { bytes } : { file, position: source!.position });
  }

  /** Stages a verified block for `job`: write with its bytes, or writeFrom for a block that lies only in its file. */
  writeBlock(block: KVBlock, job: J): Promise<void> {
    return block.encoded === undefined ? this.writeFrom(block.source, job) : this.write(block.encoded, job, block.source);
  }

  /**
   * Stages the bytes `source` names for `job`, as write does with a source, for a block that has no bytes of its own
   * (storage KVFileBlock): fails with EDGE_UNAVAILABLE when the file is no longer the one they were verified from.
   */
  async writeFrom(source: KVBlockSource, job: J): Promise<void> {
    if (this.files === undefined) return this.write(readBlockSource(source), job);
    const file = await this.files.acquire(source);
    if (file === null) throw sourceGone(source, 'the edge evicted or replaced the file since');
    await this.stage(source.length, job, { file, position: source.position });
  }

  /** Reserves `length` bytes of staging for `job` and fills them from `from`. */
  private async stage(length: number, job: J, from: { bytes: Uint8Array } | { file: HeldFile; position: number }): Promise<void> {
    const size = Math.ceil(length / ALIGN) * ALIGN;
    try {
      // Re-checked after every wait: another session's writes may have filled or flushed the slot meanwhile.
      while (this.current === null || this.current.used + size > this.current.bytes) await this.take(size);
    } catch (err) {
      if ('file' in from) from.file.release();
      throw err;
    }
    const began = performance.now();
    const slot = this.current;
    const into = slot.range!.subarray(slot.used, slot.used + length);
    const key = this.expander.batchKey(job);
    const offset = slot.ringOffset + slot.used;
    const batch = this.jobs.get(key);
    if (batch) batch.push({ job, offset });
    else this.jobs.set(key, [{ job, offset }]);
    slot.used += size;
    this.counts.blocks++;
    this.counts.bytes += length;
    if ('bytes' in from) into.set(from.bytes);
    else this.read(slot, into, from.file, from.position);
    this.counts.stageSeconds += (performance.now() - began) / 1000;
  }

  /** Reads `into` (in `slot`) from `file`; the slot is sent only once its reads are done. */
  private read(slot: Slot, into: Uint8Array, file: HeldFile, position: number): void {
    slot.reads++;
    this.counts.readBlocks++;
    const timeline = this.timeline;
    const askedAt = timeline === null ? 0 : performance.now();
    file.read(into, position, (ok) => {
      timeline?.read(askedAt);
      if (!ok)
        slot.failure ??= new KdnError(
          'KV_CORRUPT',
          'a KV block could not be read from its shared-memory file: the read failed or came short',
          {
            hint: 'refetch the object',
          },
        );
      file.release();
      if (--slot.reads === 0) slot.drained?.();
    });
  }

  /** The host side of the writes and batches so far (engine-work.ts). */
  work(): KvWriteWork {
    return { ...this.counts };
  }

  /**
   * The pending batch's recorder, for work that must run with it, after the jobs staged so far (e.g. a cache growing
   * before its next rows land: the rows already staged are expanded into the old buffers before the copy).
   */
  recorder(): Recorder {
    this.pending ??= this.ctx.recorder();
    if (this.jobs.size > 0) {
      for (const batch of this.jobs.values()) this.expander.record(this.pending, this.ring!, batch);
      this.jobs.clear();
    }
    return this.pending;
  }

  /** Submits the pending batch (if any) and resolves once every batch so far passed its error scopes. */
  async settle(): Promise<void> {
    const flushed = this.flush();
    const checks = this.checks;
    this.checks = [];
    await Promise.all([flushed, ...checks]);
    // The batches are done, so the maps come back at once and the next injection finds its buffers mapped.
    this.remapSent();
  }

  /**
   * Uploads what is staged and submits every expansion not yet recorded (e.g. for a forward that reads the cache, or
   * before a cache it writes to is released): now, unless reads still fill the staging buffer or an earlier send
   * waits on them, then once they are done. Resolves once submitted; errors surface at settle.
   */
  flush(): Promise<void> {
    const began = performance.now();
    if (this.jobs.size > 0) this.recorder();
    this.counts.submitSeconds += (performance.now() - began) / 1000;
    const rec = this.pending;
    this.pending = null;
    const slot = this.current;
    this.current = null;
    return this.send(slot, rec);
  }

  /** Runs `release` once every batch recorded so far is submitted: at once when no send waits on reads. */
  whenSubmitted(release: () => void): void {
    const sent = this.flush();
    if (this.queued === 0) release();
    else void sent.then(release, release);
  }

  async destroy(): Promise<void> {
    await this.flush().catch(() => undefined);
    for (const slot of this.pool) slot.staging.destroy();
    this.pool.length = 0;
    this.ring?.destroy();
    this.ring = null;
    await this.files?.close();
  }

  /**
   * Sends `slot`'s bytes (if any) to its region of the ring and submits `rec` (if any), in the order asked: now when
   * nothing waits, else once the slot's reads and every earlier send are done.
   */
  private send(slot: Slot | null, rec: Recorder | null): Promise<void> {
    if (this.queued === 0 && (slot === null || slot.reads === 0)) {
      const failure = this.submit(slot, rec, false);
      if (failure === null) return Promise.resolve();
      const failed = Promise.reject(failure);
      failed.catch(() => undefined);
      this.checks.push(failed);
      return failed;
    }
    if (slot !== null) slot.sealed = true;
    this.queued++;
    const sent = this.waiting.then(async () => {
      if (slot !== null && slot.reads > 0) await new Promise<void>((resolve) => (slot.drained = resolve));
      const failure = this.submit(slot, rec, true);
      if (failure !== null) throw failure;
    });
    this.waiting = sent.then(
      () => void this.queued--,
      () => void this.queued--,
    );
    this.checks.push(sent);
    return sent;
  }

  /**
   * Uploads the slot's bytes: first in `rec`, the batch that reads them, when there is one (a submission costs the
   * host more than a command in one), else in a submission of its own. Either way it precedes every submission that
   * reads them. Then submits `rec`. Returns the slot's read failure, if any (the slot goes back to the pool all the same).
   * `waited`: the send waited for reads (placing-timeline.ts UploadEvent).
   */
  private submit(slot: Slot | null, rec: Recorder | null, waited: boolean): KdnError | null {
    const began = performance.now();
    if (slot !== null || rec !== null) this.timeline?.upload(slot?.used ?? 0, rec?.counts().dispatches ?? 0, waited);
    const failure = slot?.failure ?? null;
    if (slot !== null) {
      slot.range = null;
      slot.drained = null;
      slot.sealed = false;
      slot.failure = null;
      slot.staging.unmap();
      if (rec !== null) rec.copyFirst(slot.staging, 0, slot.ring!, slot.ringOffset, slot.used);
      else if (slot.used > 0) {
        const encoder = this.ctx.device.createCommandEncoder();
        encoder.copyBufferToBuffer(slot.staging, 0, slot.ring!, slot.ringOffset, slot.used);
        this.ctx.device.queue.submit([encoder.finish()]);
      }
      slot.ready = null;
      slot.sent = ++this.sends;
    }
    if (rec !== null) {
      this.counts.submits++;
      this.counts.dispatches += rec.counts().dispatches;
      // The batch's completion is not awaited: later submissions queue behind it.
      const check = withErrorScopes(this.ctx.device, 'KV injection', () => void rec.submit());
      check.catch(() => undefined);
      this.checks.push(check);
    }
    this.counts.submitSeconds += (performance.now() - began) / 1000;
    return failure;
  }

  /**
   * Sends the current slot and makes a mapped pool slot of at least `size` bytes the current one, unless another
   * writer installed one while this waited (the caller then re-checks for room).
   */
  private async take(size: number): Promise<void> {
    const full = this.current;
    this.current = null;
    this.send(full, null).catch(() => undefined);
    const need = Math.max(this.slotBytes, size);
    let slot = this.pool.find((s) => this.free(s) && s.bytes >= size);
    if (slot === undefined && (this.pool.length === 0 || this.pool.reduce((n, s) => n + s.bytes, 0) + need <= this.poolBytes)) {
      slot = this.allocate(need);
      this.pool.push(slot);
    }
    if (slot === undefined) {
      this.remapSent();
      const sent = this.pool.filter((s) => !s.sealed);
      const began = performance.now();
      // Every slot waits on its reads when none was sent: they free up once those are done and they are sent.
      if (sent.length === 0) await this.waiting;
      else {
        slot = sent.reduce((first, s) => (s.sent < first.sent ? s : first));
        await slot.ready;
      }
      this.counts.waitSeconds += (performance.now() - began) / 1000;
      // Meanwhile another writer may have installed a slot, or used this one and sent it back to be mapped again.
      if (slot === undefined || this.current !== null || !this.free(slot)) return;
    }
    if (slot.bytes < size) {
      slot.staging.destroy();
      Object.assign(slot, this.allocate(size));
    }
    Object.assign(slot, this.ringRegion(slot.bytes));
    slot.range ??= new Uint8Array(slot.staging.getMappedRange());
    slot.used = 0;
    this.current = slot;
  }

  /** Mapped, and neither being filled nor waiting to be sent. */
  private free(slot: Slot): boolean {
    return slot.staging.mapState === 'mapped' && !slot.sealed && slot !== this.current;
  }

  /**
   * Where the next `bytes` of the ring go. Where they would pass its end, the ring starts over from the front, or is replaced by one twice as large while it is under
   * its full size (a small model's injections never take it all). Either way every expansion still to read the ring
   * is submitted first: the GPU runs submissions in order, so they read their bytes before a later upload overwrites
   * them, and the replaced ring is released only after them.
   */
  private ringRegion(bytes: number): { ring: GPUBuffer; ringOffset: number } {
    const ring = this.ring;
    if (ring === null || this.ringEnd + bytes > ring.size) {
      const size = Math.max(bytes, Math.min(ring === null ? this.slotBytes : 2 * ring.size, this.ringBytes));
      if (ring === null || size > ring.size) {
        // The jobs staged so far are recorded against the old ring first.
        if (ring !== null) this.whenSubmitted(() => ring.destroy());
        this.ring = this.ctx.storage(size, 'KV upload ring');
      } else this.flush().catch(() => undefined);
      this.ringEnd = 0;
    }
    const ringOffset = this.ringEnd;
    this.ringEnd = Math.ceil((ringOffset + bytes) / RING_ALIGN) * RING_ALIGN;
    return { ring: this.ring!, ringOffset };
  }

  private allocate(bytes: number): Slot {
    const limit = this.ctx.maxStorageBytes;
    if (bytes > limit)
      throw new KdnError('KV_MISMATCH', `A ${bytes}-byte KV layer block exceeds this adapter's ${limit}-byte buffers.`, {
        hint: 'Store the knowledge in smaller chunks.',
      });
    const staging = this.ctx.device.createBuffer({
      size: bytes,
      usage: MAP_WRITE | Usage.COPY_SRC,
      mappedAtCreation: true,
      label: 'KV staging',
    });
    return {
      staging,
      bytes,
      used: 0,
      ring: null,
      ringOffset: 0,
      reads: 0,
      drained: null,
      sealed: false,
      failure: null,
      ready: Promise.resolve(),
      range: null,
      sent: 0,
    };
  }

  /** Asks for the map of every buffer sent since its last one, all together: they come back as the GPU gets there. */
  private remapSent(): void {
    for (const slot of this.pool) {
      if (slot.ready !== null) continue;
      slot.ready = slot.staging.mapAsync(MAP_MODE_WRITE);
      // A failed map (device lost) surfaces to whoever waits on the slot next.
      slot.ready.catch(() => undefined);
    }
  }
}
