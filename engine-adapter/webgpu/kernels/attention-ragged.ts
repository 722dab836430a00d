/**
 * Attention for the few-row sequences of a batched step (decoding tokens), many sequences per dispatch: the RAGGED
 * variant of attention.wgsl. A workgroup takes one sequence and KV head; the sequence's keys and values are found
 * through a table, as ranges of the cache blocks it shares with others (kv-buffer-pool.ts). One dispatch per pair
 * of blocks and layer, then one merge of the key-range parts for all the rows, replaces a dispatch and a merge per
 * sequence and layer, whose fixed cost was most of a batched step.
 */
import type { Binding, GpuContext, Recorder } from '../gpu-context.ts';
import type { GpuKVCache } from '../gpu-kv-cache.ts';
import { ATTENTION_URL, attentionConstants, keysPerTile, MAX_HEAD_DIM, ROWS_PER_WORKGROUP } from './attention.ts';
import { attentionParams } from './attention-params.ts';
import { splitParts, splitsByKeys } from './attention-splits.ts';

/** u32 fields per sequence in the table (see attention.wgsl). */
const FIELDS = 5;

export interface RaggedSequence {
  /** The sequence's first row in the stacked queries (and outputs). */
  row: number;
  tokens: number;
  /** Absolute position of its first row. */
  position: number;
  cache: GpuKVCache;
}

export interface RaggedShape {
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Sliding window in tokens, or null. */
  window: number | null;
}

/** Whether a sequence of `tokens` rows can be served by a ragged dispatch (its rows fit one workgroup). */
export function raggedFits(shape: RaggedShape, tokens: number): boolean {
  return shape.headDim <= MAX_HEAD_DIM && shape.heads % shape.kvHeads === 0 && tokens * (shape.heads / shape.kvHeads) <= ROWS_PER_WORKGROUP;
}

interface Group {
  keys: GPUBuffer;
  values: GPUBuffer;
  count: number;
  /** Byte offset of the group's table in the step's table buffer. */
  tableOffset: number;
}

/**
 * A step's ragged attention: the sequences, whose rows must be exactly the stacked rows [0, rows), grouped per layer
 * by the blocks their caches sit in. The tables for every layer go to the GPU in one write when the plan is made
 * (before `rec` is submitted, so they land before it runs).
 */
export class RaggedAttention {
  private readonly groups: Group[][];
  private readonly table: GPUBuffer;
  readonly rows: number;
  private readonly splits: number;
  private readonly rowsPerWorkgroup: number;

  constructor(
    private readonly ctx: GpuContext,
    rec: Recorder,
    private readonly shape: RaggedShape,
    sequences: readonly RaggedSequence[],
    layers: number,
  ) {
    this.rows = sequences.reduce((sum, s) => sum + s.tokens, 0);
    const keys = Math.max(...sequences.map((s) => s.position + s.tokens));
    // As many parts as the splits allow, whatever the grid: a workgroup walks its part's tiles one after another, and
    // a decode step's attention takes as long as the tiles per part, not the workgroup count.
    this.splits = splitsByKeys(keys, keysPerTile(shape.headDim));
    // Rows per workgroup: the fewest (a power of two) that hold every sequence's rows; the rest of the 64 threads
    // share the dimensions of those rows.
    const most = Math.max(...sequences.map((s) => s.tokens * (shape.heads / shape.kvHeads)));
    this.rowsPerWorkgroup = 2 ** Math.ceil(Math.log2(most));
    const { groups, words } = tables(sequences, layers, ctx.storageOffsetAlignment / 4);
    this.groups = groups;
    this.table = ctx.scratch('ragged attention table', words.length * 4, rec);
    ctx.device.queue.writeBuffer(this.table, 0, words);
  }

  /** Records layer `l`: each group's dispatch from the stacked queries `q`, then the merge into `out`'s rows. */
  record(rec: Recorder, l: number, q: GPUBuffer, out: Binding): void {
    const { ctx, shape } = this;
    const constants = attentionConstants(shape.headDim, this.rowsPerWorkgroup);
    const pipeline = ctx.pipeline({ url: ATTENTION_URL, defines: ['SPLIT', 'RAGGED'], constants });
    const part = splitParts(ctx, rec, this.splits, this.rows * shape.heads, shape.headDim);
    for (const g of this.groups[l]!) {
      const params = attentionParams({ ...shape, tokens: this.rows, posBase: 0 }).u32(this.splits);
      const table = { buffer: this.table, offset: g.tableOffset, size: g.count * FIELDS * 4 };
      rec.dispatch(pipeline, params, [q, g.keys, g.values, part.acc, part.stats, table], [g.count, shape.kvHeads, this.splits]);
    }
    part.combine(out);
  }
}

/**
 * Per layer, the sequences' groups and their tables (five words per sequence, see attention.wgsl), every table at an
 * offset a binding can take (`align` words), all in one array.
 */
function tables(sequences: readonly RaggedSequence[], layers: number, align: number): { groups: Group[][]; words: Uint32Array } {
  const words: number[] = [];
  const groups: Group[][] = [];
  for (let l = 0; l < layers; l++) {
    groups.push(
      groupByBlocks(sequences, l).map((members) => {
        while (words.length % align !== 0) words.push(0);
        const tableOffset = words.length * 4;
        for (const seq of members) {
          const [k, v] = [seq.cache.keys[l]!, seq.cache.values[l]!];
          words.push(seq.row, seq.tokens, seq.position, k.offset / 4, v.offset / 4);
        }
        const first = members[0]!.cache;
        return { keys: first.keys[l]!.buffer, values: first.values[l]!.buffer, count: members.length, tableOffset };
      }),
    );
  }
  return { groups, words: Uint32Array.from(words) };
}

/** The sequences grouped by the pair of blocks their layer-`l` keys and values sit in. */
function groupByBlocks(sequences: readonly RaggedSequence[], l: number): RaggedSequence[][] {
  const groups = new Map<GPUBuffer, Map<GPUBuffer, RaggedSequence[]>>();
  for (const seq of sequences) {
    const [k, v] = [seq.cache.keys[l]!.buffer, seq.cache.values[l]!.buffer];
    const byValues = groups.get(k) ?? new Map<GPUBuffer, RaggedSequence[]>();
    groups.set(k, byValues);
    byValues.set(v, [...(byValues.get(v) ?? []), seq]);
  }
  return [...groups.values()].flatMap((byValues) => [...byValues.values()]);
}
