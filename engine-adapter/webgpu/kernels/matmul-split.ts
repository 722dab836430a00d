/**
 * Split-K for the matmul kernels. A product with few output tiles (the rows of a short question against a large
 * weight matrix) leaves most of a large GPU idle while each workgroup walks all of K; cutting K into parts, each
 * summed by its own workgroups into a part buffer (part 0 with the bias), multiplies the workgroups, and
 * matmul-split-reduce.wgsl adds the parts into y.
 */
import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';
import type { MatmulArgs } from './matmul.ts';
import { intoDefines, type MatmulInto } from './matmul-into.ts';

const REDUCE = new URL('./matmul-split-reduce.wgsl', import.meta.url);
/** Each part covers at least this many K tiles, or the reduction costs more than the parallelism gains. */
const MIN_TILES_PER_PART = 4;
const MAX_PARTS = 16;

export interface KSplit {
  /** Parts K is cut into (1: no split). */
  parts: number;
  /** K elements per part, a multiple of the kernel's K tile. */
  kPer: number;
}

/** The split that brings a grid of `tiles` workgroups near `target`, for K = `k` in tiles of `tileK`. */
export function chooseKSplit(tiles: number, k: number, tileK: number, target: number): KSplit {
  const kTiles = Math.ceil(k / tileK);
  const wanted = Math.min(Math.ceil(target / tiles), Math.floor(kTiles / MIN_TILES_PER_PART), MAX_PARTS);
  if (wanted <= 1) return { parts: 1, kPer: kTiles * tileK };
  const kPer = Math.ceil(kTiles / wanted) * tileK;
  return { parts: Math.ceil(k / kPer), kPer };
}

/** y = the sum of `parts` parts of `count` outputs, met with y as `into` asks. */
export function recordSplitReduce(
  ctx: GpuContext,
  rec: Recorder,
  a: { part: GPUBuffer; y: GPUBuffer; count: number; parts: number; into?: MatmulInto },
): void {
  const pipeline = ctx.pipeline({ url: REDUCE, defines: intoDefines(a.into) });
  rec.dispatch(pipeline, new Params().u32(a.count).u32(a.parts), [a.part, a.y], ctx.grid(a.count, 256));
}

/** The uniforms every matmul kernel (matvec, tiled, tensor-core) starts with. */
export function matmulParams(a: Pick<MatmulArgs, 'm' | 'w' | 'bias'>, kPer: number = a.w.cols): Params {
  return new Params()
    .u32(a.m)
    .u32(a.w.rows)
    .u32(a.w.cols)
    .u32(a.w.rowWords)
    .u32(a.bias ? 1 : 0)
    .u32(kPer);
}

/** The K split for `a` on a grid of `tiles` workgroups: as asked (kParts), else chosen for `target`. */
export function kSplitFor(a: Pick<MatmulArgs, 'w' | 'kParts'>, tiles: number, tileK: number, target: number): KSplit {
  if (a.kParts === undefined) return chooseKSplit(tiles, a.w.cols, tileK, target);
  const kPer = Math.ceil(Math.ceil(a.w.cols / tileK) / a.kParts) * tileK;
  return { parts: Math.ceil(a.w.cols / kPer), kPer };
}

/** How a product runs on a tiled kernel: the kernel (a matmul WGSL taking `defines`), its grid and the K split. */
export interface SplitPlan {
  kernel: { url: URL; defines: string[] };
  grid: [number, number];
  split: KSplit;
}

/**
 * Dispatches the plan's kernel over its grid x the split's parts; a split writes the parts to the shared part buffer
 * and reduces them into y. Either way the finished product meets y as `a.into` asks.
 */
export function recordSplitMatmul(ctx: GpuContext, rec: Recorder, a: MatmulArgs, plan: SplitPlan): void {
  if (plan.split.parts === 1) {
    const { kernel, grid, split } = plan;
    const pipeline = ctx.pipeline({ url: kernel.url, defines: [...kernel.defines, ...intoDefines(a.into)] });
    rec.dispatch(pipeline, matmulParams(a, split.kPer), [a.x, a.w.buffer, a.bias ?? ctx.dummy, a.y], grid);
    return;
  }
  const part = recordSplitParts(ctx, rec, a, plan);
  recordSplitReduce(ctx, rec, { part, y: a.y, count: a.m * a.w.rows, parts: plan.split.parts, into: a.into });
}

/**
 * The first step of a split product: each part of K summed into its own slice of the shared part buffer, laid out
 * [part][m][w.rows] (part 0 with the bias). Returns that buffer; the caller records the reduction.
 */
export function recordSplitParts(ctx: GpuContext, rec: Recorder, a: Omit<MatmulArgs, 'y' | 'into'>, plan: SplitPlan): GPUBuffer {
  const { kernel, grid, split } = plan;
  const part = ctx.scratch('matmul parts', split.parts * a.m * a.w.rows * 4, rec);
  const pipeline = ctx.pipeline({ url: kernel.url, defines: [...kernel.defines, 'SPLIT_K'] });
  rec.dispatch(pipeline, matmulParams(a, split.kPer), [a.x, a.w.buffer, a.bias ?? ctx.dummy, part], [...grid, split.parts]);
  return part;
}
