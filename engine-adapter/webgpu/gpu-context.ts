/**
 * The device plus what every kernel launcher needs: a pipeline cache, buffer helpers that check the adapter's
 * limits, and the Recorder that records a whole forward pass and submits it with few, cheap encodings.
 */
import { LRUCache } from 'lru-cache';
import { KdnError } from '../../common/errors.ts';
import { bindLayoutEntries, layoutKey } from './bind-layout.ts';
import { kernelLabel, shaderSource } from './shader-source.ts';
import type { GpuFeatures, GpuLimits, OpenedDevice } from './device.ts';

/** GPUBufferUsage / GPUMapMode values (the globals are not installed on globalThis in Node). */
export const Usage = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80, QUERY_RESOLVE: 0x200 } as const;
const MAP_MODE_READ = 0x1;

/** Bytes of a uniform slot (minUniformBufferOffsetAlignment is at most 256); a dispatch's parameters take 1-4. */
const PARAM_SLOT = 256;

export interface KernelSpec {
  /** URL of the .wgsl file (beside its launcher). */
  url: URL;
  defines?: readonly string[];
  /** WGSL override constants. */
  constants?: Record<string, number>;
}

/** Words of a uniform slot. */
const SLOT_WORDS = PARAM_SLOT / 4;
/**
 * Slots one dispatch's parameters may span: the expansion kernels' job lists (kernels/expand-jobs.ts) take up to 1 KiB,
 * so that one dispatch expands a layer's blocks of up to 60 chunks. With one slot (12 jobs) an 8k context's injection
 * was about 240 dispatches, each 20-70 us of the engine thread's time to record and encode.
 */
const MAX_PARAM_SLOTS = 4;
/** Turns an f32 into its bit pattern. */
const f32Bits = new Float32Array(1);
const f32Word = new Uint32Array(f32Bits.buffer);

/**
 * Uniform parameters of one dispatch: 4-byte scalars in the order the WGSL struct declares them, kept as their
 * 32-bit patterns in a plain array. A question's forward records about 800 dispatches: a small ArrayBuffer each was a
 * measurable share of the engine thread's allocations, where the Recorder copies every slot into one buffer anyway.
 */
export class Params {
  readonly words: number[] = [];
  u32(value: number): this {
    this.words.push(value >>> 0);
    return this;
  }
  i32(value: number): this {
    this.words.push(value >>> 0);
    return this;
  }
  f32(value: number): this {
    f32Bits[0] = value;
    this.words.push(f32Word[0]!);
    return this;
  }
  /** A vec4<u32> (values taken as 32-bit words), at the 16-byte alignment WGSL gives vectors in a uniform. */
  vec4u(a: number, b: number, c: number, d: number): this {
    while (this.words.length % 4 !== 0) this.words.push(0);
    this.words.push(a >>> 0, b >>> 0, c >>> 0, d >>> 0);
    return this;
  }
}

/** The GPU time of one recorded dispatch (a timed Recorder's). */
export interface DispatchTime {
  /** The kernel's file name and defines, e.g. "matmul-subgroup-matrix-short SPLIT_K". */
  kernel: string;
  ms: number;
}

/** Timestamps a query set holds at most (WebGPU's limit is 4096). */
const QUERIES_PER_SET = 4096;
/**
 * Dispatches per command buffer: each is submitted once encoded, so the GPU starts on the first layers while the
 * CPU encodes the rest (a question's forward is about 800 dispatches).
 */
const SEGMENT_DISPATCHES = 128;
/**
 * Bind groups kept for reuse. Forward passes bind the same buffers every time (their uniform slot is a dynamic
 * offset, bind-layout.ts), and creating a bind group was most of a dispatch's encoding time (about 10 of 12
 * microseconds on SwiftShader's host).
 */
const BIND_GROUP_CACHE_ENTRIES = 16384;

/** Bytes [offset, offset + size) of a buffer, bound as a kernel's whole array (offset a multiple of the device's
 * minStorageBufferOffsetAlignment: GpuContext.storageOffsetAlignment). */
export interface BufferRange {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** What a kernel binds: a whole buffer or a range of one. */
export type Binding = GPUBuffer | BufferRange;

/**
 * The shared uniform buffer and its host words. The words are one long-lived array, not one per submission: while a
 * context is being placed, the engine thread's young generation counts the mapped staging ranges (kv-injector.ts) as
 * external memory, and V8 then answers every new ArrayBuffer with a scavenge (64-77 such scavenges in an 8B 8k run
 * against 3-4 with this array, bench/results/gpu/uniform-words-ab-h100.json).
 */
interface Uniforms {
  buffer: GPUBuffer;
  words: Uint32Array;
}

/** Commands a Recorder holds, by kind: the host-side recording work of a step, as tests and profiling count it. */
export interface CommandCounts {
  dispatches: number;
  copies: number;
}

type Command =
  | {
      kind: 'dispatch';
      pipeline: GPUComputePipeline;
      /** Its uniform parameters, the first of the slots they go to, and how many they take. */
      words: number[];
      slot: number;
      slots: number;
      buffers: Binding[];
      groups: [number, number, number];
    }
  | { kind: 'copy'; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; size: number };

/**
 * Records dispatches and copies, then writes all their uniform parameters to the context's uniform buffer at once and
 * encodes them into command buffers of SEGMENT_DISPATCHES dispatches, each submitted as soon as it is encoded, with
 * bind groups the context keeps. Readbacks requested while recording come back from one staging buffer after submit().
 *
 * A timed Recorder (profiling, where the adapter has timestamp queries) runs each dispatch in a compute pass of its
 * own and reads the pass's GPU timestamps back: dispatchTimes() gives each kernel's time, without the launch gaps and
 * barriers between kernels (which the extra passes change).
 */
export class Recorder {
  private readonly commands: Command[] = [];
  /** Uniform slots the dispatches' parameters take, and the dispatches. */
  private slots = 0;
  private dispatches = 0;
  private readonly readbacks: { src: GPUBuffer; offset: number; size: number }[] = [];
  private readonly cleanups: (() => void)[] = [];
  private submitted = false;
  private times: DispatchTime[] | null = null;

  constructor(
    private readonly ctx: GpuContext,
    private readonly timed = false,
  ) {
    if (timed && !ctx.features.timestampQuery)
      throw new KdnError('ENGINE_UNAVAILABLE', 'This adapter has no timestamp queries to time kernels with.');
  }

  /** Each dispatch's GPU time, in recording order: a timed Recorder's, once submit() resolved. */
  dispatchTimes(): DispatchTime[] {
    if (this.times === null) throw new KdnError('INTERNAL', 'dispatchTimes() needs a timed Recorder whose submit() resolved.');
    return this.times;
  }

  dispatch(pipeline: GPUComputePipeline, params: Params, buffers: Binding[], groups: readonly number[]): void {
    const [x = 1, y = 1, z = 1] = groups;
    const max = this.ctx.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max)
      throw new KdnError('INTERNAL', `Dispatch of ${x}x${y}x${z} workgroups exceeds ${max} per dimension.`);
    if (x === 0 || y === 0 || z === 0) return;
    const slots = Math.max(1, Math.ceil(params.words.length / SLOT_WORDS));
    if (slots > MAX_PARAM_SLOTS)
      throw new KdnError(
        'INTERNAL',
        `Uniform parameters of ${4 * params.words.length} bytes exceed a dispatch's ${MAX_PARAM_SLOTS * PARAM_SLOT} bytes.`,
      );
    this.commands.push({ kind: 'dispatch', pipeline, words: params.words, slot: this.slots, slots, buffers, groups: [x, y, z] });
    this.slots += slots;
    this.dispatches++;
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    if (size > 0) this.commands.push({ kind: 'copy', src, srcOffset, dst, dstOffset, size });
  }

  /** A copy that runs before everything recorded so far (the upload of bytes those commands read). */
  copyFirst(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    if (size > 0) this.commands.unshift({ kind: 'copy', src, srcOffset, dst, dstOffset, size });
  }

  /** The dispatches and copies recorded so far. */
  counts(): CommandCounts {
    return { dispatches: this.dispatches, copies: this.commands.length - this.dispatches };
  }

  /** Asks for bytes [offset, offset + size) of `src` as they are after this recording ran; returns its index. */
  readback(src: GPUBuffer, offset: number, size: number): number {
    this.readbacks.push({ src, offset, size });
    return this.readbacks.length - 1;
  }

  /** Runs `cleanup` right after submission (e.g. destroying buffers the recorded commands still read). */
  afterSubmit(cleanup: () => void): void {
    this.cleanups.push(cleanup);
  }

  /**
   * Encodes and submits synchronously; the returned promise resolves with the readbacks in request order. Without
   * readbacks it asks Dawn when the GPU is done only once something awaits it (whenAwaited).
   */
  submit(): Promise<ArrayBuffer[]> {
    const { staging, offsets, timer } = this.encodeAndSubmit();
    const device = this.ctx.device;
    if (staging === null) return whenAwaited(() => device.queue.onSubmittedWorkDone().then(() => []));
    const done = staging.mapAsync(MAP_MODE_READ).then(() => {
      const mapped = staging.getMappedRange();
      const out = this.readbacks.map((r, i) => mapped.slice(offsets[i]!, offsets[i]! + r.size));
      staging.unmap();
      staging.destroy();
      if (timer !== null) this.times = timer.times(out.pop()!);
      return out;
    });
    // Callers await `done`; when an error scope fails first they throw that instead, and this keeps the then
    // orphaned rejection from being reported as unhandled.
    done.catch(() => undefined);
    return done;
  }

  private encodeAndSubmit(): { staging: GPUBuffer | null; offsets: number[]; timer: PassTimer | null } {
    if (this.submitted) throw new KdnError('INTERNAL', 'Recorder submitted twice.');
    this.submitted = true;
    const device = this.ctx.device;
    const { buffer: uniforms, words } = this.ctx.uniforms(this.slots, this);
    if (this.slots > 0) {
      const used = this.slots * SLOT_WORDS;
      words.fill(0, 0, used);
      for (const c of this.commands) if (c.kind === 'dispatch') words.set(c.words, c.slot * SLOT_WORDS);
      device.queue.writeBuffer(uniforms, 0, words, 0, used);
    }
    let encoder = device.createCommandEncoder();
    const timer = this.timed ? new PassTimer(device, this.dispatches) : null;
    let pass: GPUComputePassEncoder | null = null;
    let inSegment = 0;
    for (const c of this.commands) {
      if (c.kind === 'copy') {
        pass?.end();
        pass = null;
        encoder.copyBufferToBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.size);
        continue;
      }
      if (inSegment === SEGMENT_DISPATCHES) {
        pass?.end();
        pass = null;
        device.queue.submit([encoder.finish()]);
        encoder = device.createCommandEncoder();
        inSegment = 0;
      }
      if (timer !== null) {
        pass?.end();
        pass = encoder.beginComputePass({ timestampWrites: timer.next(this.ctx.kernelName(c.pipeline)) });
      }
      pass ??= encoder.beginComputePass();
      pass.setPipeline(c.pipeline);
      pass.setBindGroup(0, this.ctx.bindGroup(c.pipeline, uniforms, c.slots * PARAM_SLOT, c.buffers), [c.slot * PARAM_SLOT]);
      pass.dispatchWorkgroups(...c.groups);
      inSegment++;
    }
    pass?.end();
    if (timer !== null) {
      const resolved = timer.resolve(encoder);
      this.readbacks.push({ src: resolved, offset: 0, size: resolved.size });
      this.cleanups.push(() => timer.destroy());
    }
    let staging: GPUBuffer | null = null;
    const offsets: number[] = [];
    if (this.readbacks.length > 0) {
      const total = this.readbacks.reduce((sum, r) => sum + r.size, 0);
      staging = device.createBuffer({ size: Math.max(4, total), usage: Usage.MAP_READ | Usage.COPY_DST });
      let at = 0;
      for (const r of this.readbacks) {
        encoder.copyBufferToBuffer(r.src, r.offset, staging, at, r.size);
        offsets.push(at);
        at += r.size;
      }
    }
    device.queue.submit([encoder.finish()]);
    for (const cleanup of this.cleanups) cleanup();
    return { staging, offsets, timer };
  }
}

/**
 * A promise that calls `ask` the first time it is awaited (or given a then, catch or finally), never if nobody does.
 * While any answer from Dawn is pending, its bindings poll for it with setImmediate on every turn of this thread's
 * event loop: the loop never rests, and each turn makes garbage (a software adapter's thread waiting 0.6 s on the GPU
 * spent 0.14-0.18 s of it collecting). Most submissions' ends are awaited by nobody (each layer of a gated forward,
 * each batch of KV writes), so asking for them kept the engine's thread spinning through a whole injection.
 */
function whenAwaited<T>(ask: () => Promise<T>): Promise<T> {
  let asked: Promise<T> | undefined;
  const started = (): Promise<T> => (asked ??= ask());
  const lazy: Promise<T> = {
    // biome-ignore lint/suspicious/noThenProperty: a thenable on purpose, so that awaiting it is what asks
    then: (fulfilled, rejected) => started().then(fulfilled, rejected),
    catch: (rejected) => started().catch(rejected),
    finally: (settled) => started().finally(settled),
    [Symbol.toStringTag]: 'Promise',
  };
  return lazy;
}

/** Timestamp queries around each dispatch's pass, resolved into one buffer. */
class PassTimer {
  private readonly sets: GPUQuerySet[] = [];
  private readonly kernels: string[] = [];
  private readonly buffer: GPUBuffer;

  constructor(device: GPUDevice, dispatches: number) {
    for (let left = 2 * dispatches; left > 0; left -= QUERIES_PER_SET) {
      this.sets.push(device.createQuerySet({ type: 'timestamp', count: Math.min(left, QUERIES_PER_SET) }));
    }
    this.buffer = device.createBuffer({ size: Math.max(16, 16 * dispatches), usage: Usage.QUERY_RESOLVE | Usage.COPY_SRC });
  }

  next(kernel: string): GPUComputePassTimestampWrites {
    const index = 2 * this.kernels.length;
    this.kernels.push(kernel);
    const at = index % QUERIES_PER_SET;
    return { querySet: this.sets[Math.floor(index / QUERIES_PER_SET)]!, beginningOfPassWriteIndex: at, endOfPassWriteIndex: at + 1 };
  }

  resolve(encoder: GPUCommandEncoder): GPUBuffer {
    this.sets.forEach((set, i) => encoder.resolveQuerySet(set, 0, set.count, this.buffer, i * QUERIES_PER_SET * 8));
    return this.buffer;
  }

  times(resolved: ArrayBuffer): DispatchTime[] {
    const ns = new BigUint64Array(resolved);
    return this.kernels.map((kernel, i) => ({ kernel, ms: Number(ns[2 * i + 1]! - ns[2 * i]!) / 1e6 }));
  }

  destroy(): void {
    for (const set of this.sets) set.destroy();
    this.buffer.destroy();
  }
}

/** The size of a storage buffer asked for `bytes`: at least 16, a multiple of 16. */
export function storageSize(bytes: number): number {
  return Math.max(16, Math.ceil(bytes / 16) * 16);
}

export class GpuContext {
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private readonly kernelNames = new Map<GPUComputePipeline, string>();
  /** Bind group layouts by their entries (bind-layout.ts), and each pipeline's. */
  private readonly layouts = new Map<string, { group: GPUBindGroupLayout; pipeline: GPUPipelineLayout }>();
  private readonly layoutOf = new Map<GPUComputePipeline, { key: string; group: GPUBindGroupLayout }>();
  private readonly bindGroups = new LRUCache<string, GPUBindGroup>({ max: BIND_GROUP_CACHE_ENTRIES });
  private readonly ids = new WeakMap<object, number>();
  private nextId = 1;
  private uniformBuffer: Uniforms | null = null;
  private readonly scratches = new Map<string, GPUBuffer>();
  readonly device: GPUDevice;
  readonly features: GpuFeatures;
  readonly limits: GpuLimits;
  readonly description: string;
  /** Bytes of the largest storage buffer a kernel can bind whole on this adapter. */
  readonly maxStorageBytes: number;
  /** Bytes a BufferRange's offset must be a multiple of. */
  readonly storageOffsetAlignment: number;
  /** Bound where a kernel's optional input (e.g. a bias) is absent. */
  readonly dummy: GPUBuffer;

  constructor(private readonly opened: OpenedDevice) {
    this.device = opened.device;
    this.features = opened.features;
    this.limits = opened.limits;
    this.description = opened.description;
    this.maxStorageBytes = Math.min(this.limits.maxBufferSize, this.limits.maxStorageBufferBindingSize);
    this.storageOffsetAlignment = this.limits.minStorageBufferOffsetAlignment;
    this.dummy = this.storage(16, 'dummy');
  }

  pipeline(spec: KernelSpec): GPUComputePipeline {
    const defines = [...(spec.defines ?? [])].sort();
    const constants = spec.constants ?? {};
    const key = `${spec.url.href}|${defines.join(',')}|${JSON.stringify(Object.entries(constants).sort())}`;
    let pipeline = this.pipelines.get(key);
    if (pipeline === undefined) {
      const code = shaderSource(spec.url, new Set(defines));
      const module = this.device.createShaderModule({ code, label: spec.url.pathname });
      const entries = bindLayoutEntries(code, spec.url.pathname);
      const layoutId = layoutKey(entries);
      let layout = this.layouts.get(layoutId);
      if (layout === undefined) {
        const group = this.device.createBindGroupLayout({ entries, label: layoutId });
        layout = { group, pipeline: this.device.createPipelineLayout({ bindGroupLayouts: [group] }) };
        this.layouts.set(layoutId, layout);
      }
      pipeline = this.device.createComputePipeline({ layout: layout.pipeline, compute: { module, entryPoint: 'main', constants } });
      this.layoutOf.set(pipeline, { key: layoutId, group: layout.group });
      this.pipelines.set(key, pipeline);
      this.kernelNames.set(pipeline, kernelLabel(spec.url, defines));
    }
    return pipeline;
  }

  /** A Recorder; a timed one gives each dispatch's GPU time (see Recorder). */
  recorder(options: { timed?: boolean } = {}): Recorder {
    return new Recorder(this, options.timed ?? false);
  }

  /**
   * The buffer every Recorder writes its uniform parameters to, at least `slots` slots long, and the host words they
   * are gathered in first; grown for `rec`, the old buffer destroyed once `rec` submitted. Sharing the buffer is safe:
   * a submission's writeBuffer takes effect after the command buffers submitted before it ran, in queue order. The
   * words are copied by writeBuffer when called, so the next Recorder may reuse them at once.
   */
  uniforms(slots: number, rec: Recorder): Uniforms {
    const held = this.uniformBuffer;
    if (held !== null && held.buffer.size >= slots * PARAM_SLOT) return held;
    const size = PARAM_SLOT * 2 ** Math.ceil(Math.log2(Math.max(64, slots)));
    const buffer = this.device.createBuffer({ size, label: 'uniforms', usage: Usage.UNIFORM | Usage.COPY_DST });
    this.uniformBuffer = { buffer, words: new Uint32Array(size / 4) };
    if (held !== null) rec.afterSubmit(() => held.buffer.destroy());
    return this.uniformBuffer;
  }

  /**
   * The bind group of `pipeline`'s layout with `paramBytes` of `uniforms` at binding 0 (their offset given at
   * setBindGroup) and `buffers` at bindings 1.., created once. Keys name buffers by identity, so a destroyed buffer's
   * groups are never asked for again and age out.
   */
  bindGroup(pipeline: GPUComputePipeline, uniforms: GPUBuffer, paramBytes: number, buffers: readonly Binding[]): GPUBindGroup {
    const layout = this.layoutOf.get(pipeline);
    if (layout === undefined) throw new KdnError('INTERNAL', 'a pipeline not made by GpuContext.pipeline() was bound');
    const names = buffers.map((b) => ('buffer' in b ? `${this.id(b.buffer)}:${b.offset}+${b.size}` : this.id(b)));
    const key = `${layout.key}|${this.id(uniforms)}+${paramBytes},${names.join(',')}`;
    let group = this.bindGroups.get(key);
    if (group === undefined) {
      const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: uniforms, offset: 0, size: paramBytes } }];
      buffers.forEach((b, i) => entries.push({ binding: i + 1, resource: 'buffer' in b ? b : { buffer: b } }));
      group = this.device.createBindGroup({ layout: layout.group, entries });
      this.bindGroups.set(key, group);
    }
    return group;
  }

  private id(o: object): number {
    let id = this.ids.get(o);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(o, id);
    }
    return id;
  }

  /** The file name and defines of a pipeline made by pipeline(). */
  kernelName(pipeline: GPUComputePipeline): string {
    return this.kernelNames.get(pipeline) ?? 'unknown';
  }

  /** Workgroup grid for `count` items of `perGroup` each, split over x and y past the per-dimension limit. */
  grid(count: number, perGroup: number): [number, number] {
    const groups = Math.ceil(count / perGroup);
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    if (groups <= max) return [groups, 1];
    const x = max;
    return [x, Math.ceil(groups / x)];
  }

  private checkSize(bytes: number, label: string): void {
    if (bytes > this.maxStorageBytes) {
      throw new KdnError(
        'ENGINE_UNAVAILABLE',
        `${label} needs ${bytes} bytes, more than this adapter's ${this.maxStorageBytes}-byte buffer limit.`,
        {
          hint: 'Use f16 weights, a smaller capacity, or a smaller model.',
        },
      );
    }
  }

  /** A zero-filled storage buffer (sizes are rounded up by storageSize). */
  storage(bytes: number, label: string): GPUBuffer {
    const size = storageSize(bytes);
    this.checkSize(size, label);
    return this.device.createBuffer({ size, label, usage: Usage.STORAGE | Usage.COPY_SRC | Usage.COPY_DST });
  }

  /**
   * A storage buffer named `name` of at least `bytes`, shared by every kernel that records with this context (e.g.
   * split parts reused by every layer): grown when too small, the old one destroyed once `rec` is submitted.
   */
  scratch(name: string, bytes: number, rec: Recorder): GPUBuffer {
    const held = this.scratches.get(name);
    if (held !== undefined && held.size >= bytes) return held;
    const buffer = this.storage(bytes, name);
    this.scratches.set(name, buffer);
    if (held) rec.afterSubmit(() => held.destroy());
    return buffer;
  }

  /** A storage buffer holding `data`, filled through a mapping (no staging copy). */
  upload(data: Float32Array | Uint32Array, label: string): GPUBuffer {
    const size = storageSize(data.byteLength);
    this.checkSize(size, label);
    const buffer = this.device.createBuffer({
      size,
      label,
      usage: Usage.STORAGE | Usage.COPY_SRC | Usage.COPY_DST,
      mappedAtCreation: true,
    });
    new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    buffer.unmap();
    return buffer;
  }

  /** Reads `bytes` of `buffer` from `offset` (a standalone submission). */
  async read(buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    const rec = this.recorder();
    rec.readback(buffer, offset, bytes);
    const [out] = await rec.submit();
    return out!;
  }

  /**
   * Releases the device once the work submitted to it has finished. Dawn aborts the whole process when a thread
   * ends while one of its promises (a readback, onSubmittedWorkDone) is still unsettled, and destroying the device
   * does not settle them by itself; waiting for the queue first lets every earlier promise settle.
   */
  async dispose(): Promise<void> {
    // A lost device rejects; it holds no work then.
    await this.device.queue.onSubmittedWorkDone().catch(() => undefined);
    this.pipelines.clear();
    this.scratches.clear();
    this.bindGroups.clear();
    this.uniformBuffer?.buffer.destroy();
    this.opened.release();
  }
}
