/**
 * A weight matrix [rows][cols] on the GPU, in HF [out][in] orientation: f32, or f16 pairs packed into u32 words
 * (rows padded to an even length) read with unpack2x16float, which every adapter supports, so the half-size path
 * runs and is tested on software adapters too.
 */
import type { Tensor } from '../model/weights.ts';
import { KdnError } from '../../common/errors.ts';
import { Usage, type GpuContext } from './gpu-context.ts';
import { recordPackF16 } from './kernels/pack-f16.ts';

export interface GpuMatrix {
  buffer: GPUBuffer;
  rows: number;
  cols: number;
  f16: boolean;
  /** u32 words per row when f16 (ceil(cols / 2)); cols when f32. */
  rowWords: number;
}

/** f32 rows are staged through a temporary buffer of about this size while packing to f16. */
const PACK_CHUNK_BYTES = 64 * 1024 * 1024;

function shapeOf(tensor: Tensor, label: string): [number, number] {
  const [rows, cols] = tensor.shape;
  if (tensor.shape.length !== 2 || rows === undefined || cols === undefined || rows * cols !== tensor.data.length) {
    throw new KdnError('MODEL_INVALID', `${label} has shape [${tensor.shape.join(', ')}] for ${tensor.data.length} values; expected a matrix.`);
  }
  return [rows, cols];
}

export function uploadMatrixF32(ctx: GpuContext, tensor: Tensor, label: string): GpuMatrix {
  const [rows, cols] = shapeOf(tensor, label);
  return { buffer: ctx.upload(tensor.data, label), rows, cols, f16: false, rowWords: cols };
}

/** Converts on the GPU, chunk by chunk of rows, so no host-side f16 conversion or full f32 copy is needed. */
export async function uploadMatrixF16(ctx: GpuContext, tensor: Tensor, label: string): Promise<GpuMatrix> {
  const [rows, cols] = shapeOf(tensor, label);
  const rowWords = Math.ceil(cols / 2);
  const buffer = ctx.storage(rows * rowWords * 4, label);
  const chunkRows = Math.max(1, Math.min(rows, Math.floor(PACK_CHUNK_BYTES / (cols * 4))));
  const staging = ctx.device.createBuffer({ size: Math.ceil((chunkRows * cols * 4) / 16) * 16, usage: Usage.STORAGE | Usage.COPY_DST });
  try {
    for (let r0 = 0; r0 < rows; r0 += chunkRows) {
      const n = Math.min(chunkRows, rows - r0);
      ctx.device.queue.writeBuffer(staging, 0, tensor.data, r0 * cols, n * cols);
      const rec = ctx.recorder();
      recordPackF16(ctx, rec, { src: staging, dst: buffer, rows: n, cols, dstOffset: r0 * rowWords });
      // Waiting per chunk bounds the staging memory Dawn keeps for pending writeBuffer calls.
      await rec.submit();
    }
  } finally {
    staging.destroy();
  }
  return { buffer, rows, cols, f16: true, rowWords };
}
