/**
 * A weight matrix [rows][cols] on the GPU, in HF [out][in] orientation: f32, or f16 pairs packed into u32 words
 * (rows padded to an even length) read with unpack2x16float, which every adapter supports, so the half-size path
 * runs and is tested on software adapters too.
 */
import type { Tensor } from '../model/weights.ts';
import { KdnError } from '../../common/errors.ts';
import { Usage, type Binding, type GpuContext } from './gpu-context.ts';
import { recordPackF16 } from './kernels/pack-f16.ts';

/**
 * 'rows': [rows][rowWords]. 'blocks' (f16 only, cols a multiple of 32): 128-row by 32-column blocks, each contiguous
 * (kernels/weight-blocks.wgsl), so a tensor-core workgroup's K step reads one 8 KB block instead of 128 rows' 64-byte
 * pieces: the prefill matmul ran 4-11% faster so, the 8B prefill 3-7% (H200, bench/results/gpu/
 * matmul-machine-code-and-layout-h200.json, weight-blocks-ab-h200.json). Only the tensor-core matmuls and matvec read
 * blocks.
 */
export type MatrixLayout = 'rows' | 'blocks';

export interface GpuMatrix {
  /** The whole buffer, or the range of one that holds this matrix's rows (stacked-matrix.ts). */
  buffer: Binding;
  rows: number;
  cols: number;
  f16: boolean;
  /** u32 words per row when f16 (ceil(cols / 2)); cols when f32. */
  rowWords: number;
  layout: MatrixLayout;
}

/** A matrix in a buffer of its own. */
export type OwnedMatrix = GpuMatrix & { buffer: GPUBuffer };

/** Rows and columns of one block of the blocks layout. */
export const BLOCK_ROWS = 128;
export const BLOCK_COLS = 32;

/** f32 rows are staged through a temporary buffer of about this size while packing to f16. */
const PACK_CHUNK_BYTES = 64 * 1024 * 1024;

function shapeOf(tensor: Tensor, label: string): [number, number] {
  const [rows, cols] = tensor.shape;
  if (tensor.shape.length !== 2 || rows === undefined || cols === undefined || rows * cols !== tensor.data.length) {
    throw new KdnError(
      'MODEL_INVALID',
      `${label} has shape [${tensor.shape.join(', ')}] for ${tensor.data.length} values; expected a matrix.`,
    );
  }
  return [rows, cols];
}

export function uploadMatrixF32(ctx: GpuContext, tensor: Tensor, label: string): OwnedMatrix {
  const [rows, cols] = shapeOf(tensor, label);
  return { buffer: ctx.upload(tensor.data, label), rows, cols, f16: false, rowWords: cols, layout: 'rows' };
}

/** Bytes of a [rows][cols] f16 matrix in `layout` (the blocks layout pads its last row group with zero rows). */
export function f16MatrixBytes(rows: number, cols: number, layout: MatrixLayout): number {
  const storedRows = layout === 'blocks' ? Math.ceil(rows / BLOCK_ROWS) * BLOCK_ROWS : rows;
  return storedRows * Math.ceil(cols / 2) * 4;
}

/** Converts on the GPU, chunk by chunk of rows, so no host-side f16 conversion or full f32 copy is needed. */
export async function uploadMatrixF16(ctx: GpuContext, tensor: Tensor, label: string, layout: MatrixLayout = 'rows'): Promise<OwnedMatrix> {
  const [rows, cols] = f16Shape(tensor, label, layout);
  // New buffers are zeroed, which the blocks layout's padding rows rely on.
  const buffer = ctx.storage(f16MatrixBytes(rows, cols, layout), label);
  await packRowsF16(ctx, tensor, buffer, 0, layout);
  return { buffer, rows, cols, f16: true, rowWords: Math.ceil(cols / 2), layout };
}

/** The tensor's [rows, cols], checked to be a matrix that `layout` can hold. */
export function f16Shape(tensor: Tensor, label: string, layout: MatrixLayout): [number, number] {
  const [rows, cols] = shapeOf(tensor, label);
  if (layout === 'blocks' && cols % BLOCK_COLS !== 0) {
    throw new KdnError('INTERNAL', `${label}: the blocks layout needs a multiple of ${BLOCK_COLS} columns, not ${cols}`);
  }
  return [rows, cols];
}

/** Packs the tensor's rows to f16 as rows `firstRow`.. of the matrix in `buffer` (of the tensor's width, in `layout`). */
export async function packRowsF16(
  ctx: GpuContext,
  tensor: Tensor,
  buffer: GPUBuffer,
  firstRow: number,
  layout: MatrixLayout,
): Promise<void> {
  const [rows, cols] = tensor.shape as [number, number];
  const chunkRows = Math.max(1, Math.min(rows, Math.floor(PACK_CHUNK_BYTES / (cols * 4))));
  const staging = ctx.device.createBuffer({ size: Math.ceil((chunkRows * cols * 4) / 16) * 16, usage: Usage.STORAGE | Usage.COPY_DST });
  try {
    for (let r0 = 0; r0 < rows; r0 += chunkRows) {
      const n = Math.min(chunkRows, rows - r0);
      ctx.device.queue.writeBuffer(staging, 0, tensor.data, r0 * cols, n * cols);
      const rec = ctx.recorder();
      recordPackF16(ctx, rec, { src: staging, dst: buffer, rows: n, cols, firstRow: firstRow + r0, layout });
      // Waiting per chunk bounds the staging memory Dawn keeps for pending writeBuffer calls.
      await rec.submit();
    }
  } finally {
    staging.destroy();
  }
}
