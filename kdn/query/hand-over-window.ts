/**
 * Bounds the bytes a fetch thread has handed over to the engine's thread on routed ports (routed-stream.ts) and not
 * had back. The engine's thread places blocks more slowly than fetch threads read a same-host edge's files, and every
 * block it holds is an ArrayBuffer on its heap's account: once those grow 64 MB past what they were at its last full
 * collection, V8 collects again (external memory pressure), though nothing held can be freed. Unbounded, an 8k-token
 * int4 query on an H100 left that thread 3-7 collections and 12-27 ms of them, on the thread that bounds the query;
 * bounded, about 8 ms, and every chunk's layer 0 was placed 40 ms sooner, the lowest layers no longer queued behind a
 * backlog (bench/HISTORY.md). Past the window, messages wait here, in the order sent, and go as the engine sends
 * buffers back (or closes a port). Blocks that go as where they lie in a same-host file (block-outlet.ts) carry no
 * buffer and count nothing.
 */
import type { MessagePort } from 'node:worker_threads';
import type { RoutedBlocks } from '../../engine-adapter/worker/routed-stream.ts';

interface Waiting {
  port: MessagePort;
  message: RoutedBlocks;
  buffers: ArrayBuffer[];
  bytes: number;
}

export class HandOverWindow {
  private inFlight = 0;
  /** Bytes out on each port, so that a port closed with buffers never sent back gives them up. */
  private readonly out = new Map<MessagePort, number>();
  private readonly waiting: Waiting[] = [];
  /** Ports closed by the engine's side: what is sent there after is dropped, as postMessage would drop it. */
  private readonly gone = new WeakSet<MessagePort>();

  /** `capBytes`: most bytes out at once (a larger message still goes alone); 0 for no bound. */
  constructor(readonly capBytes: number) {}

  /** Bytes handed over and not back yet. */
  get bytesOut(): number {
    return this.inFlight;
  }

  /** Sends `message` on `port` with `buffers` transferred, now or once the window has room for them. */
  send(port: MessagePort, message: RoutedBlocks, buffers: ArrayBuffer[] = []): void {
    if (this.gone.has(port)) return;
    this.waiting.push({ port, message, buffers, bytes: byteLength(buffers) });
    this.drain();
  }

  /** The engine sent `buffers` back on `port`. */
  returned(port: MessagePort, buffers: readonly ArrayBuffer[]): void {
    this.release(port, byteLength(buffers));
    this.drain();
  }

  /** `port` closed: what is out on it will not come back, and what waits for it is dropped. */
  closed(port: MessagePort): void {
    this.gone.add(port);
    this.release(port, this.out.get(port) ?? 0);
    this.out.delete(port);
    for (let i = this.waiting.length - 1; i >= 0; i--) if (this.waiting[i]!.port === port) this.waiting.splice(i, 1);
    this.drain();
  }

  private release(port: MessagePort, bytes: number): void {
    const out = this.out.get(port) ?? 0;
    const back = Math.min(bytes, out);
    this.out.set(port, out - back);
    this.inFlight -= back;
  }

  private drain(): void {
    while (this.waiting.length > 0) {
      const next = this.waiting[0]!;
      if (this.capBytes > 0 && this.inFlight > 0 && this.inFlight + next.bytes > this.capBytes) return;
      this.waiting.shift();
      this.inFlight += next.bytes;
      this.out.set(next.port, (this.out.get(next.port) ?? 0) + next.bytes);
      next.port.postMessage(next.message, next.buffers);
    }
  }
}

function byteLength(buffers: readonly ArrayBuffer[]): number {
  return buffers.reduce((n, b) => n + b.byteLength, 0);
}
