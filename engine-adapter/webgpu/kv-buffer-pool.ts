/**
 * Where sessions' KV cache tensors live on the GPU: ranges of a few large blocks rather than a buffer each.
 *
 * Sharing blocks is what lets a batched decode step attend for every sequence in one dispatch per layer
 * (kernels/attention-ragged.ts): a kernel binds one buffer, so sequences whose caches sit in one block can be
 * served together, where a buffer per session costs a dispatch per session and layer. Blocks also keep allocation
 * off the hot path: creating a large session's cache (64 buffers of tens of MB for an 8B model at 8k tokens) cost
 * device allocations on every query, about 55 ms on the H100.
 *
 * Ranges are asked for by slot (one tensor of every cache, such as layer 3's keys), and a slot's ranges share its
 * blocks, so that a layer's keys of all sessions sit together. A slot's new block holds RANGES_PER_BLOCK ranges of
 * the size asked (within FIRST_BLOCK_MAX_BYTES), or as many bytes as the slot already holds where that is more
 * (at most MAX_BLOCK_BYTES and the adapter's binding limit; a larger request gets a block of its own size): blocks
 * grow with the load and hold about as much free space as is in use. An emptied block is kept for later sessions
 * while the empty blocks hold at most the largest cache seen (expect()), and destroyed past that; but each slot keeps
 * one emptied block its largest range fits, since a block is larger than the range it was made for and trimming to
 * the cache's size alone destroyed half of them after every query: the next query then allocated them again, about
 * 50 ms of its time to first token on the H200 (8B shape, 8k tokens).
 *
 * A reused range holds another session's rows; that is safe because every read of a cache is bounded by positions
 * its own session wrote (attention by causality, export by the session's length). A range is handed out again as
 * soon as it is given back: the work already submitted that touches it runs first, in queue order.
 */
import { storageSize, type BufferRange, type GpuContext } from './gpu-context.ts';

/** Token counts caches allocate: 256, then steps of 1/8 of the enclosing power of two (at most 12.5% over). */
export function sizeClass(tokens: number): number {
  if (tokens <= 256) return 256;
  const step = 2 ** Math.floor(Math.log2(tokens - 1)) / 8;
  return Math.ceil(tokens / step) * step;
}

/** Ranges a slot's first block holds, so that the first sessions of a batch share it. */
const RANGES_PER_BLOCK = 16;
/** The most bytes RANGES_PER_BLOCK ranges may take: one long session then costs no large reserve. */
const FIRST_BLOCK_MAX_BYTES = 64 << 20;
/** The largest block made to hold several ranges. */
const MAX_BLOCK_BYTES = 1 << 30;

interface Gap {
  offset: number;
  size: number;
}

/** One buffer and its free gaps, in offset order and merged with their neighbours. */
class Block {
  readonly gaps: Gap[];
  used = 0;

  constructor(
    readonly buffer: GPUBuffer,
    readonly slot: string,
  ) {
    this.gaps = [{ offset: 0, size: buffer.size }];
  }

  /** The offset of `size` bytes at `align` taken from the first gap that fits, or -1. */
  take(size: number, align: number): number {
    for (let i = 0; i < this.gaps.length; i++) {
      const gap = this.gaps[i]!;
      const offset = Math.ceil(gap.offset / align) * align;
      const end = gap.offset + gap.size;
      if (offset + size > end) continue;
      const pieces: Gap[] = [];
      if (offset > gap.offset) pieces.push({ offset: gap.offset, size: offset - gap.offset });
      if (offset + size < end) pieces.push({ offset: offset + size, size: end - offset - size });
      this.gaps.splice(i, 1, ...pieces);
      this.used += size;
      return offset;
    }
    return -1;
  }

  give(offset: number, size: number): void {
    let at = this.gaps.findIndex((g) => g.offset > offset);
    if (at === -1) at = this.gaps.length;
    this.gaps.splice(at, 0, { offset, size });
    this.used -= size;
    // Merge with the following gap, then with the preceding one.
    const next = this.gaps[at + 1];
    if (next && offset + size === next.offset) this.gaps.splice(at, 2, { offset, size: size + next.size });
    const prev = this.gaps[at - 1];
    const cur = this.gaps[at]!;
    if (prev && prev.offset + prev.size === cur.offset) this.gaps.splice(at - 1, 2, { offset: prev.offset, size: prev.size + cur.size });
  }
}

export class KvBufferPool {
  private readonly blocks: Block[] = [];
  private readonly owners = new Map<GPUBuffer, Block>();
  /** Bytes of empty blocks kept at most: the largest cache seen, so one such session's worth waits for the next. */
  private capBytes = 0;
  /** The largest range each slot was asked for. */
  private readonly largest = new Map<string, number>();

  constructor(private readonly ctx: GpuContext) {}

  /** Notes a cache of `bytes` in all, which raises what the pool keeps. */
  expect(bytes: number): void {
    this.capBytes = Math.max(this.capBytes, bytes);
  }

  /** Bytes held in blocks, in use or free. */
  get heldBytes(): number {
    return this.blocks.reduce((sum, b) => sum + b.buffer.size, 0);
  }

  /**
   * A range of `bytes` (rounded by storageSize) for `slot` at an offset a kernel can bind, from the slot's fullest
   * block it fits in (so blocks fill up and sequences share them), never from `avoid`'s block (a range grown by a
   * copy from a range of `avoid` cannot sit in the same buffer: a buffer copy needs two).
   */
  take(bytes: number, slot: string, avoid?: GPUBuffer): BufferRange {
    const size = storageSize(bytes);
    this.largest.set(slot, Math.max(this.largest.get(slot) ?? 0, size));
    const align = this.ctx.storageOffsetAlignment;
    const candidates = this.blocks.filter((b) => b.slot === slot && b.buffer !== avoid).sort((a, b) => b.used - a.used);
    for (const block of candidates) {
      const offset = block.take(size, align);
      if (offset !== -1) return { buffer: block.buffer, offset, size };
    }
    const block = this.addBlock(size, slot);
    return { buffer: block.buffer, offset: block.take(size, align), size };
  }

  /** Returns a range the caller no longer uses (its submitted work may still run: later work queues behind it). */
  give(range: BufferRange): void {
    const block = this.owners.get(range.buffer);
    if (!block) throw new Error('KvBufferPool.give: the range is not from this pool');
    block.give(range.offset, range.size);
    if (block.used === 0) this.trimEmpty();
  }

  destroy(): void {
    for (const b of this.blocks) b.buffer.destroy();
    this.blocks.length = 0;
    this.owners.clear();
  }

  private addBlock(size: number, slot: string): Block {
    const limit = Math.min(this.ctx.maxStorageBytes, MAX_BLOCK_BYTES);
    const slotHeld = this.blocks.filter((b) => b.slot === slot).reduce((sum, b) => sum + b.buffer.size, 0);
    const wanted = Math.max(Math.min(RANGES_PER_BLOCK * size, FIRST_BLOCK_MAX_BYTES), slotHeld);
    const blockBytes = Math.max(size, Math.min(limit, wanted));
    const block = new Block(this.ctx.storage(blockBytes, `KV block for ${slot}`), slot);
    this.blocks.push(block);
    this.owners.set(block.buffer, block);
    return block;
  }

  /**
   * Destroys empty blocks, smallest first, until those left hold at most capBytes, sparing each slot's seat (with
   * nothing expected, every empty block goes).
   */
  private trimEmpty(): void {
    const empty = this.blocks.filter((b) => b.used === 0).sort((a, b) => a.buffer.size - b.buffer.size);
    const seats = this.capBytes === 0 ? new Set<Block>() : this.seats(empty);
    let kept = empty.reduce((sum, b) => sum + b.buffer.size, 0);
    for (const block of empty) {
      if (kept <= this.capBytes) return;
      if (seats.has(block)) continue;
      kept -= block.buffer.size;
      this.blocks.splice(this.blocks.indexOf(block), 1);
      this.owners.delete(block.buffer);
      block.buffer.destroy();
    }
  }

  /**
   * Per slot, the smallest of `empty` (sorted by size) its largest range fits, if that block is no larger than a
   * block made for such a range (addBlock): blocks grown by a batch's load are not kept this way.
   */
  private seats(empty: readonly Block[]): Set<Block> {
    const seats = new Map<string, Block>();
    for (const block of empty) {
      const range = this.largest.get(block.slot) ?? 0;
      const madeFor = Math.max(range, Math.min(RANGES_PER_BLOCK * range, FIRST_BLOCK_MAX_BYTES));
      if (!seats.has(block.slot) && block.buffer.size >= range && block.buffer.size <= madeFor) seats.set(block.slot, block);
    }
    return new Set(seats.values());
  }
}
