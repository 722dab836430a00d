/**
 * Embedding lookup: out[t][:] = table[ids[t]][:].
 * Shapes: table [vocab][dim], ids [tokens], out [tokens][dim].
 */
export function embedding(out: Float32Array, table: Float32Array, dim: number, ids: ArrayLike<number>): void {
  const vocab = table.length / dim;
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t]!;
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new RangeError(`token id ${id} outside vocabulary [0, ${vocab})`);
    out.set(table.subarray(id * dim, (id + 1) * dim), t * dim);
  }
}
