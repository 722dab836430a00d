/**
 * Where a fetch worker sends the verified layer blocks of one object. They are held on the worker until the pool
 * says where they go: to the pool (its reader is read on the event loop), or over a port straight to the engine's
 * thread (routed-stream.ts), so that the event loop never touches their bytes. A block read from a same-host file
 * goes to the engine's thread as where it lies (RoutedBlock), and its buffer is received into again at once.
 * Whichever way they go, the pool hears of progress, arrival and failure. An object read from a same-host file may
 * also be announced (announce): every layer's file block goes to the engine's thread before any is verified, and
 * the verified blocks that follow only say how far verification got.
 */
import type { MessagePort } from 'node:worker_threads';
import type { WireError } from '../../common/errors.ts';
import type { BlockMessage, RoutedBlock } from '../../engine-adapter/worker/routed-stream.ts';
import type { KVBlockSource } from '../../storage/kv-object/types.ts';
import type { HandOverWindow } from './hand-over-window.ts';
import type { FromWorker } from './kv-fetch-protocol.ts';
import type { ReceiveSpool, SpoolFile } from './receive-spool.ts';

/** A verified block whose bytes span their own buffer, or a buffer every block of its batch shares whole. */
export type OutletBlock = BlockMessage;

type Post = (message: FromWorker, transfer?: ArrayBuffer[]) => void;

/**
 * Longest a file stays open for blocks routed to the engine's thread: it reads them within the query, and past this
 * a block is read by its path again (or, evicted, refetched).
 */
const HOLD_OPEN_MAX_MS = 60_000;

export class BlockOutlet {
  private held: OutletBlock[] = [];
  private target: 'pool' | MessagePort | undefined;
  /** Closes what the blocks' sources need open (holdOpen) once the engine's thread is done with them. */
  private closers: (() => void)[] = [];
  private portClosed = false;
  private outcome: 'arrived' | { error: WireError } | undefined;
  private received = 0;
  /** Announced file blocks: held until the object is routed, then 'sent'; dropped if the pool reads it. */
  private announcement: RoutedBlock[] | 'sent' | undefined;
  /** Where blocks routed with their bytes are written instead (spooled); null once none could be had. */
  private spoolFile: SpoolFile | null | undefined;

  /**
   * `window`: what the blocks routed to the engine's thread may hold of its memory at once (hand-over-window.ts).
   * `recycle`: takes back a buffer none of whose blocks will be sent with their bytes. `spool`: where blocks routed
   * to the engine's thread without a file of their own are written, to go as where they lie (receive-spool.ts).
   */
  constructor(
    private readonly id: number,
    private readonly post: Post,
    private readonly window: HandOverWindow,
    private readonly recycle: (buffer: ArrayBuffer) => void,
    private readonly spool?: ReceiveSpool,
  ) {}

  /**
   * True once the object ended and its destination is known: the worker can forget it. A failed object waits for
   * its destination too, so an engine it is routed to hears the failure itself (the pool drops it otherwise).
   */
  get settled(): boolean {
    return this.outcome !== undefined && this.target !== undefined;
  }

  add(blocks: OutletBlock[], received: number): void {
    this.received = received;
    if (this.target === 'pool') this.post({ type: 'layers', id: this.id, layers: blocks, received }, buffersOf(blocks));
    else {
      if (this.target) this.sendTo(this.target, blocks);
      else this.held.push(...blocks);
      this.post({ type: 'progress', id: this.id, received });
    }
  }

  /**
   * Every layer's file block, before any is verified (FetchPoolOptions.verifyAlongside): they go to the engine's
   * thread if the object is routed there, and the verified blocks added after them then only say how many leading
   * layers are verified (RoutedBlocks 'verified'). Dropped if the pool reads the object: its blocks then go with
   * their bytes as usual.
   */
  announce(sources: readonly KVBlockSource[]): void {
    if (this.target === 'pool' || this.announcement !== undefined) return;
    const blocks = sources.map((source, layer): RoutedBlock => ({ layer, source, announced: true }));
    if (this.target) this.sendAnnouncement(this.target, blocks);
    else this.announcement = blocks;
  }

  /**
   * Takes back an announcement not yet sent (the object's layers then go as verified blocks); false once the engine's
   * thread has it, when a layer that fails must fail the object.
   */
  withdrawAnnouncement(): boolean {
    if (this.announcement === 'sent') return false;
    this.announcement = undefined;
    return true;
  }

  end(received: number): void {
    this.received = received;
    this.outcome = 'arrived';
    if (this.target === 'pool') {
      this.post({ type: 'end', id: this.id, received });
      return;
    }
    if (this.target) this.window.send(this.target, { type: 'end' });
    this.post({ type: 'arrived', id: this.id, received });
  }

  fail(error: WireError, received: number): void {
    this.outcome = { error };
    this.held = [];
    if (this.target && this.target !== 'pool') this.window.send(this.target, { type: 'fail', error });
    this.post({ type: 'error', id: this.id, error, received });
  }

  /**
   * Keeps what `close` closes (the file the blocks lie in) until the engine's thread is done with the blocks: until
   * it closes its port when they are routed there, at once when they go to the pool (their bytes go with them), or
   * when the outlet is dropped.
   */
  holdOpen(close: () => void): void {
    this.closers.push(close);
    if (this.target === 'pool' || this.portClosed) this.release();
    // A port whose other end was never taken up (an engine that went away before its call) never closes.
    else setTimeout(() => this.release(), HOLD_OPEN_MAX_MS).unref();
  }

  /** The blocks will never be sent (the object was dropped before anyone asked for it): lets go of what they hold. */
  drop(): void {
    this.held = [];
    this.announcement = undefined;
    this.release();
  }

  /** The pool reads the blocks: those held go now, later ones as they are verified. */
  deliver(): void {
    if (this.target) return;
    this.target = 'pool';
    this.announcement = undefined;
    this.release();
    const held = this.take();
    if (held.length > 0) this.add(held, this.received);
    if (this.outcome === 'arrived') this.post({ type: 'end', id: this.id, received: this.received });
  }

  /** The engine's thread takes the blocks on `port`: those held go now, later ones as they are verified. */
  route(port: MessagePort): void {
    if (this.target) return;
    this.target = port;
    port.once('close', () => {
      this.portClosed = true;
      this.release();
    });
    if (typeof this.outcome === 'object') {
      this.window.send(port, { type: 'fail', error: this.outcome.error });
      return;
    }
    if (Array.isArray(this.announcement)) this.sendAnnouncement(port, this.announcement);
    const held = this.take();
    if (held.length > 0) this.sendTo(port, held);
    if (this.outcome === 'arrived') this.window.send(port, { type: 'end' });
  }

  private sendAnnouncement(port: MessagePort, blocks: RoutedBlock[]): void {
    this.announcement = 'sent';
    this.window.send(port, { type: 'blocks', blocks });
  }

  /**
   * Sends `blocks` to the engine's thread: those with a source, or spooled, as the source alone (their buffers
   * recycled); after an announcement, only how many leading layers they verify.
   */
  private sendTo(port: MessagePort, blocks: readonly OutletBlock[]): void {
    if (this.announcement === 'sent') {
      for (const buffer of buffersOf(blocks)) this.recycle(buffer);
      this.window.send(port, { type: 'verified', through: Math.max(...blocks.map((b) => b.layer)) + 1 });
      return;
    }
    const routed = blocks.map((b): RoutedBlock => {
      const source = b.source ?? this.spooled(b.bytes);
      return source ? { layer: b.layer, source } : b;
    });
    const sent = buffersOf(routed.filter((b): b is OutletBlock => b.bytes !== undefined));
    for (const buffer of buffersOf(blocks)) if (!sent.includes(buffer)) this.recycle(buffer);
    this.window.send(port, { type: 'blocks', blocks: routed }, sent);
  }

  /** Where `bytes` lie once written to this object's spool file; undefined when they must go themselves. */
  private spooled(bytes: Uint8Array): KVBlockSource | undefined {
    if (this.spool === undefined) return undefined;
    if (this.spoolFile === undefined) {
      const file = this.spool.open();
      this.spoolFile = file ?? null;
      if (file) this.holdOpen(() => file.close());
    }
    const source = this.spoolFile?.write(bytes);
    if (source === undefined) this.spool.sent(bytes.length);
    return source;
  }

  private release(): void {
    const closers = this.closers;
    this.closers = [];
    for (const close of closers) close();
  }

  private take(): OutletBlock[] {
    const held = this.held;
    this.held = [];
    return held;
  }
}

function buffersOf(blocks: readonly OutletBlock[]): ArrayBuffer[] {
  return [...new Set(blocks.map((b) => b.bytes.buffer as ArrayBuffer))];
}
