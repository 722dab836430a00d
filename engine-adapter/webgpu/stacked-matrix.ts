/**
 * Weight matrices that read the same input, stacked: a layer's q, k and v, and its gate and up. Where they can share
 * one buffer, their rows lie one part after the other, so a product over all of them can run as one matmul
 * (kernels/matmul-stacked.ts), and each part is a view of its range of rows for the products that run part by part.
 * Where they cannot, each part keeps a buffer of its own and `whole` is null: f32 weights, a part that does not start
 * on a 128-row group of the blocks layout or on the adapter's binding-offset alignment, or a stack larger than one
 * binding may be.
 */
import type { Tensor } from '../model/weights.ts';
import type { GpuContext } from './gpu-context.ts';
import { BLOCK_ROWS, f16MatrixBytes, f16Shape, packRowsF16, type GpuMatrix, type MatrixLayout } from './gpu-matrix.ts';

/** A matrix and its bias, if it has one. */
export interface StackedPart {
  w: GpuMatrix;
  bias?: GPUBuffer;
}

export interface StackedMatrix {
  /** Every part's rows as one matrix, their biases as one vector; null where the parts are separate buffers. */
  whole: StackedPart | null;
  parts: StackedPart[];
}

/** f16 matrices of one width uploaded into one buffer, rows stacked in order, and a view of each. */
export interface StackedUpload {
  buffer: GPUBuffer;
  whole: GpuMatrix;
  parts: GpuMatrix[];
}

/** The tensors' f16 rows stacked in one buffer in `layout`, or null where they cannot share one (see above). */
export async function uploadStackedF16(
  ctx: GpuContext,
  tensors: readonly Tensor[],
  label: string,
  layout: MatrixLayout,
): Promise<StackedUpload | null> {
  const shapes = tensors.map((t, i) => f16Shape(t, `${label} part ${i}`, layout));
  const cols = shapes[0]![1];
  if (shapes.some(([, partCols]) => partCols !== cols)) return null;
  const stack = allocateStacked(
    ctx,
    shapes.map(([rows]) => rows),
    cols,
    label,
    layout,
  );
  if (stack === null) return null;
  try {
    let row = 0;
    for (const [i, t] of tensors.entries()) {
      await packRowsF16(ctx, t, stack.buffer, row, layout);
      row += stack.parts[i]!.rows;
    }
  } catch (err) {
    stack.buffer.destroy();
    throw err;
  }
  return stack;
}

/**
 * A zeroed buffer for f16 parts of `cols` columns and `partRows` rows each, stacked in `layout`, with the whole and
 * a view of each part; null where a part cannot be a view or the stack is larger than one binding may be.
 */
export function allocateStacked(
  ctx: GpuContext,
  partRows: readonly number[],
  cols: number,
  label: string,
  layout: MatrixLayout,
): StackedUpload | null {
  const rowWords = Math.ceil(cols / 2);
  const starts: number[] = [];
  let rows = 0;
  for (const r of partRows) {
    if (!startsAView(ctx, rows, rowWords, layout) || (layout === 'blocks' && r % BLOCK_ROWS !== 0)) return null;
    starts.push(rows);
    rows += r;
  }
  const bytes = f16MatrixBytes(rows, cols, layout);
  if (bytes > ctx.maxStorageBytes) return null;
  const buffer = ctx.storage(bytes, label);
  const matrix = (b: GpuMatrix['buffer'], r: number): GpuMatrix => ({ buffer: b, rows: r, cols, f16: true, rowWords, layout });
  const parts = partRows.map((r, i) => matrix({ buffer, offset: starts[i]! * rowWords * 4, size: f16MatrixBytes(r, cols, layout) }, r));
  return { buffer, whole: matrix(buffer, rows), parts };
}

/** Whether a view can start at row `row`: a whole row group of the blocks layout, at an offset a binding may take. */
function startsAView(ctx: GpuContext, row: number, rowWords: number, layout: MatrixLayout): boolean {
  return (layout === 'rows' || row % BLOCK_ROWS === 0) && (row * rowWords * 4) % ctx.storageOffsetAlignment === 0;
}
