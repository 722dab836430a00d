/**
 * The transform codec's projection and its inverse as small WebAssembly SIMD kernels: V8 runs scalar JS at about one
 * f64 multiply-add per cycle, and these products are nearly all of encoding and decoding (D x D per token and head).
 * project's lanes are two basis rows, so each coefficient is still the f64 sum of its products in order of d (each
 * product of two f32 values is exact in f64): the codes are bit for bit those of the plain definition. unproject's
 * lanes are two outputs, each summed in order of k and rounded to f32 after every term, as the JS decoder did.
 *
 * The module is assembled here from the opcodes below (no build step, no binary in the repo); it imports its
 * memory, which holds [rows | x | coeff]:
 *   rows   f32, the coded basis rows in groups of four: rows[g * 4 * D + 4 * d + r] is row 4g + r at d,
 *          K a multiple of 4 (zero rows pad it)
 *   x      f64, four vectors interleaved: x[4 * d + i]
 *   coeff  f64, coeff[i * K + k] = row k . x[i]
 * project(rows, x, coeff, D, K) walks each group of four rows once per four vectors: per d, two f64x2 row pairs times
 * four splatted x values feed eight f64x2 sums. For decoding it holds [columns | base | c | out] (D a multiple of 4):
 *   columns f32, the coded rows transposed in groups of four outputs: columns[g * 4 * K + 4 * k + j] is row k at 4g + j
 *   base    f32, base[d]
 *   c       f64, four tokens' coefficients interleaved: c[4 * k + i]
 *   out     f32, out[i * D + d] = f32 sum, in order of k, of base[d] + c[4 * k + i] * row k at d
 */

/** The WebAssembly API this file uses: the project's lib (ES2023, no DOM) does not declare it. */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Memory: new (descriptor: { initial: number }) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
const PAGE = 65536;

/** A kernel with room for one head's rows: fill `x`, call run(), read `coeff`. The views are valid until the next projector(). */
export interface Projector {
  x: Float64Array;
  coeff: Float64Array;
  run(): void;
}

/** A decoding kernel with room for one head: fill `c`, call run(), read `out`. Valid until the next projector(). */
export interface Unprojector {
  c: Float64Array;
  out: Float32Array;
  run(): void;
}

type Kernel = (rows: number, x: number, coeff: number, D: number, K: number) => void;
type InverseKernel = (columns: number, base: number, c: number, out: number, D: number, K: number) => void;
/** One instance per thread, made on first use; coding is synchronous, so callers never overlap. */
let instance: { memory: WasmMemory; project: Kernel; unproject: InverseKernel } | undefined;

/** The shared instance's memory, at least `bytes` long. */
function memoryOf(bytes: number): { memory: WasmMemory; project: Kernel; unproject: InverseKernel } {
  if (!instance) {
    const memory = new wasm.Memory({ initial: 1 });
    const exports = new wasm.Instance(new wasm.Module(assemble()), { kdn: { memory } }).exports;
    instance = { memory, project: exports.project as Kernel, unproject: exports.unproject as InverseKernel };
  }
  const { memory } = instance;
  if (memory.buffer.byteLength < bytes) memory.grow(Math.ceil((bytes - memory.buffer.byteLength) / PAGE));
  return instance;
}

/** The shared decoding kernel, loaded with `columns` and `base` (layout above; D a multiple of 4). */
export function unprojector(columns: Float32Array, base: Float32Array, D: number, K: number): Unprojector {
  if (D % 4 !== 0 || columns.length !== K * D || base.length !== D) {
    throw new Error(`unprojector: ${columns.length} floats are not ${K} rows of ${D} (D a multiple of 4)`);
  }
  const baseAt = columns.byteLength;
  const cAt = baseAt + 4 * D;
  const outAt = cAt + 32 * K;
  const { memory, unproject } = memoryOf(outAt + 16 * D);
  new Float32Array(memory.buffer, 0, columns.length).set(columns);
  new Float32Array(memory.buffer, baseAt, D).set(base);
  return {
    c: new Float64Array(memory.buffer, cAt, 4 * K),
    out: new Float32Array(memory.buffer, outAt, 4 * D),
    run: () => unproject(0, baseAt, cAt, outAt, D, K),
  };
}

/** The shared kernel, loaded with `rows` (layout above; K rows of D). */
export function projector(rows: Float32Array, D: number, K: number): Projector {
  if (K % 4 !== 0 || rows.length !== K * D)
    throw new Error(`projector: ${rows.length} floats are not ${K} rows of ${D} (K a multiple of 4)`);
  const xAt = rows.byteLength;
  const coeffAt = xAt + 32 * D;
  const { memory, project } = memoryOf(coeffAt + 32 * K);
  new Float32Array(memory.buffer, 0, rows.length).set(rows);
  return {
    x: new Float64Array(memory.buffer, xAt, 4 * D),
    coeff: new Float64Array(memory.buffer, coeffAt, 4 * K),
    run: () => project(0, xAt, coeffAt, D, K),
  };
}

// WebAssembly opcodes the kernel uses (core spec and the fixed-width SIMD proposal, merged into Wasm 2.0).
const OP = {
  block: 0x02,
  loop: 0x03,
  br: 0x0c,
  brIf: 0x0d,
  end: 0x0b,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  i32Const: 0x41,
  i32Eqz: 0x45,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32Sub: 0x6b,
  i32Mul: 0x6c,
} as const;
/** SIMD opcodes, after the 0xfd prefix. */
const SIMD = {
  v128Load64Splat: 10,
  v128Store: 11,
  v128Const: 12,
  v128Store64Lane: 91,
  f32x4DemoteF64x2Zero: 94,
  f64x2Add: 240,
  f64x2Mul: 242,
  f64x2PromoteLowF32x4: 95,
  v128Load64Zero: 93,
} as const;
const I32 = 0x7f;
const V128 = 0x7b;
const VOID = 0x40;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    const b = n & 0x7f;
    n >>>= 7;
    out.push(n ? b | 0x80 : b);
  } while (n);
  return out;
}

/** Signed LEB128 of a small non-negative constant (below 2^31). */
function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>>= 7;
    if (n === 0 && !(b & 0x40)) return [...out, b];
    out.push(b | 0x80);
  }
}

const simd = (op: number, ...immediates: number[]): number[] => [0xfd, ...uleb(op), ...immediates];
/** memarg: alignment 2^align bytes, constant byte offset. */
const memarg = (align: number, offset: number): number[] => [align, ...uleb(offset)];

const get = (i: number): number[] => [OP.localGet, i];
const set = (i: number): number[] => [OP.localSet, i];
const tee = (i: number): number[] => [OP.localTee, i];
const i32 = (v: number): number[] => [OP.i32Const, ...sleb(v)];
/** Two f32 at `memarg` of the address on the stack, widened to an f64x2. */
const loadPair = (offset: number): number[] => [...simd(SIMD.v128Load64Zero, ...memarg(3, offset)), ...simd(SIMD.f64x2PromoteLowF32x4)];

/** project's function body (locals first). */
function kernelBody(): number[] {
  // Parameters, then locals.
  const [ROWS, X, COEFF, D, K] = [0, 1, 2, 3, 4];
  const [k, d, row, xp, kBytes, out] = [5, 6, 7, 8, 9, 10];
  const acc = (j: number): number => 11 + j;
  const [r0, r1, xi] = [19, 20, 21];
  const code: number[][] = [];
  const emit = (...parts: number[][]): void => void code.push(...parts);

  emit(get(K), i32(8), [OP.i32Mul], set(kBytes));
  emit([OP.block, VOID], [OP.loop, VOID]);
  // for (k = 0; k < K; k += 4): leave the block when k >= K.
  emit(get(k), get(K), [OP.i32GeU], [OP.brIf, 1]);
  for (let j = 0; j < 8; j++) emit(simd(SIMD.v128Const, ...new Array<number>(16).fill(0)), set(acc(j)));
  // row = rows + 4 * k * D: the group's four floats at d; xp = x; d = D.
  emit(get(ROWS), get(k), get(D), [OP.i32Mul], i32(4), [OP.i32Mul], [OP.i32Add], set(row));
  emit(get(X), set(xp), get(D), set(d));
  emit([OP.loop, VOID]);
  // r0 = rows k, k+1 at d and r1 = rows k+2, k+3, widened to f64.
  emit(get(row), loadPair(0), set(r0), get(row), loadPair(8), set(r1));
  for (let i = 0; i < 4; i++) {
    emit(get(xp), simd(SIMD.v128Load64Splat, ...memarg(3, 8 * i)), set(xi));
    emit(get(acc(i)), get(r0), get(xi), simd(SIMD.f64x2Mul), simd(SIMD.f64x2Add), set(acc(i)));
    emit(get(acc(4 + i)), get(r1), get(xi), simd(SIMD.f64x2Mul), simd(SIMD.f64x2Add), set(acc(4 + i)));
  }
  emit(get(row), i32(16), [OP.i32Add], set(row));
  emit(get(xp), i32(32), [OP.i32Add], set(xp));
  emit(get(d), i32(1), [OP.i32Sub], tee(d), [OP.brIf, 0], [OP.end]);
  // coeff[i * K + k .. k + 3] = acc(i) (rows k, k+1), acc(4 + i) (rows k+2, k+3).
  emit(get(COEFF), get(k), i32(8), [OP.i32Mul], [OP.i32Add], set(out));
  for (let i = 0; i < 4; i++) {
    emit(get(out), get(acc(i)), simd(SIMD.v128Store, ...memarg(3, 0)));
    emit(get(out), get(acc(4 + i)), simd(SIMD.v128Store, ...memarg(3, 16)));
    emit(get(out), get(kBytes), [OP.i32Add], set(out));
  }
  emit(get(k), i32(4), [OP.i32Add], set(k), [OP.br, 0], [OP.end], [OP.end], [OP.end]);
  // Locals: 6 i32 (k .. out), 11 v128 (8 sums, r0, r1, xi).
  return [2, 6, I32, 11, V128, ...code.flat()];
}

/**
 * unproject's function body: for each group of four outputs, per k two f64x2 column pairs times four splatted
 * coefficients feed eight f64x2 sums, each rounded to f32 (demote, promote) after every term.
 */
function inverseBody(): number[] {
  const [COLUMNS, BASE, C, OUT, D, K] = [0, 1, 2, 3, 4, 5];
  const [d, col, cp, k, out, b01, b23] = [6, 7, 8, 9, 10, 11, 12];
  const acc = (j: number): number => 13 + j;
  const [r0, r1, ci] = [21, 22, 23];
  const code: number[][] = [];
  const emit = (...parts: number[][]): void => void code.push(...parts);
  const round = [...simd(SIMD.f32x4DemoteF64x2Zero), ...simd(SIMD.f64x2PromoteLowF32x4)];
  emit(get(COLUMNS), set(col));
  emit([OP.block, VOID], [OP.loop, VOID]);
  // for (d = 0; d < D; d += 4), col running through the groups of columns.
  emit(get(d), get(D), [OP.i32GeU], [OP.brIf, 1]);
  emit(get(BASE), get(d), i32(4), [OP.i32Mul], [OP.i32Add], tee(out), loadPair(0), set(b01), get(out), loadPair(8), set(b23));
  for (let i = 0; i < 4; i++) emit(get(b01), set(acc(i)), get(b23), set(acc(4 + i)));
  emit(get(C), set(cp), get(K), set(k));
  // An empty K skips the sums: every output is its base.
  emit([OP.block, VOID], get(k), [OP.i32Eqz], [OP.brIf, 0], [OP.loop, VOID]);
  emit(get(col), loadPair(0), set(r0), get(col), loadPair(8), set(r1));
  for (let i = 0; i < 4; i++) {
    emit(get(cp), simd(SIMD.v128Load64Splat, ...memarg(3, 8 * i)), set(ci));
    emit(get(acc(i)), get(r0), get(ci), simd(SIMD.f64x2Mul), simd(SIMD.f64x2Add), round, set(acc(i)));
    emit(get(acc(4 + i)), get(r1), get(ci), simd(SIMD.f64x2Mul), simd(SIMD.f64x2Add), round, set(acc(4 + i)));
  }
  emit(get(col), i32(16), [OP.i32Add], set(col), get(cp), i32(32), [OP.i32Add], set(cp));
  emit(get(k), i32(1), [OP.i32Sub], tee(k), [OP.brIf, 0], [OP.end], [OP.end]);
  // out[i * D + d .. d + 3] = the sums, as f32.
  emit(get(OUT), get(d), i32(4), [OP.i32Mul], [OP.i32Add], set(out));
  for (let i = 0; i < 4; i++) {
    emit(get(out), get(acc(i)), simd(SIMD.f32x4DemoteF64x2Zero), simd(SIMD.v128Store64Lane, ...memarg(3, 0), 0));
    emit(get(out), get(acc(4 + i)), simd(SIMD.f32x4DemoteF64x2Zero), simd(SIMD.v128Store64Lane, ...memarg(3, 8), 0));
    emit(get(out), get(D), i32(4), [OP.i32Mul], [OP.i32Add], set(out));
  }
  emit(get(d), i32(4), [OP.i32Add], set(d), [OP.br, 0], [OP.end], [OP.end], [OP.end]);
  // Locals: 5 i32 (d .. out), 10 v128 (b01, b23, 8 sums), then r0, r1, ci.
  return [2, 5, I32, 13, V128, ...code.flat()];
}

/** The module: memory imported as kdn.memory; functions project (type 0) and unproject (type 1) exported. */
function assemble(): Uint8Array<ArrayBuffer> {
  const section = (id: number, content: number[]): number[] => [id, ...uleb(content.length), ...content];
  const name = (s: string): number[] => [s.length, ...Buffer.from(s, 'ascii')];
  const body = kernelBody();
  const inverse = inverseBody();
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, [2, 0x60, 5, I32, I32, I32, I32, I32, 0, 0x60, 6, I32, I32, I32, I32, I32, I32, 0]),
    ...section(2, [1, ...name('kdn'), ...name('memory'), 0x02, 0x00, 0x01]),
    ...section(3, [2, 0, 1]),
    ...section(7, [2, ...name('project'), 0x00, 0, ...name('unproject'), 0x00, 1]),
    ...section(10, [2, ...uleb(body.length), ...body, ...uleb(inverse.length), ...inverse]),
  ]);
}
