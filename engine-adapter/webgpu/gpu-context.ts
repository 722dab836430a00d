/**
 * The device plus what every kernel launcher needs: a pipeline cache, buffer helpers that check the adapter's
 * limits, and the Recorder that batches a whole forward pass into one submission.
 */
import { KdnError } from '../../common/errors.ts';
import { shaderSource } from './shader-source.ts';
import type { GpuFeatures, GpuLimits, OpenedDevice } from './device.ts';

/** GPUBufferUsage / GPUMapMode values (the globals are not installed on globalThis in Node). */
export const Usage = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80 } as const;
const MAP_MODE_READ = 0x1;

/** Bytes reserved per dispatch for its uniform parameters (minUniformBufferOffsetAlignment is at most 256). */
const PARAM_SLOT = 256;

export interface KernelSpec {
  /** URL of the .wgsl file (beside its launcher). */
  url: URL;
  defines?: readonly string[];
  /** WGSL override constants. */
  constants?: Record<string, number>;
}

/** Uniform parameters of one dispatch: 4-byte scalars in the order the WGSL struct declares them. */
export class Params {
  private readonly view = new DataView(new ArrayBuffer(PARAM_SLOT));
  private offset = 0;
  u32(value: number): this {
    this.view.setUint32(this.offset, value, true);
    this.offset += 4;
    return this;
  }
  i32(value: number): this {
    this.view.setInt32(this.offset, value, true);
    this.offset += 4;
    return this;
  }
  f32(value: number): this {
    this.view.setFloat32(this.offset, value, true);
    this.offset += 4;
    return this;
  }
  /** A vec4<u32> (values taken as 32-bit words), at the 16-byte alignment WGSL gives vectors in a uniform. */
  vec4u(a: number, b: number, c: number, d: number): this {
    this.offset = Math.ceil(this.offset / 16) * 16;
    for (const v of [a, b, c, d]) this.u32(v >>> 0);
    return this;
  }
  bytes(): Uint8Array {
    return new Uint8Array(this.view.buffer);
  }
}

type Command =
  | { kind: 'dispatch'; pipeline: GPUComputePipeline; slot: number; buffers: GPUBuffer[]; groups: [number, number, number] }
  | { kind: 'copy'; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; size: number };

/**
 * Records dispatches and copies, then encodes them into one command buffer with all uniform parameters in one
 * buffer written once. Readbacks requested while recording come back from one staging buffer after submit().
 */
export class Recorder {
  private readonly commands: Command[] = [];
  private readonly params: Uint8Array[] = [];
  private readonly readbacks: { src: GPUBuffer; offset: number; size: number }[] = [];
  private readonly cleanups: (() => void)[] = [];
  private submitted = false;

  constructor(private readonly ctx: GpuContext) {}

  dispatch(pipeline: GPUComputePipeline, params: Params, buffers: GPUBuffer[], groups: readonly number[]): void {
    const [x = 1, y = 1, z = 1] = groups;
    const max = this.ctx.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) throw new KdnError('INTERNAL', `Dispatch of ${x}x${y}x${z} workgroups exceeds ${max} per dimension.`);
    if (x === 0 || y === 0 || z === 0) return;
    this.commands.push({ kind: 'dispatch', pipeline, slot: this.params.length, buffers, groups: [x, y, z] });
    this.params.push(params.bytes());
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    if (size > 0) this.commands.push({ kind: 'copy', src, srcOffset, dst, dstOffset, size });
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

  /** Encodes and submits synchronously; the returned promise resolves with the readbacks in request order. */
  submit(): Promise<ArrayBuffer[]> {
    if (this.submitted) throw new KdnError('INTERNAL', 'Recorder submitted twice.');
    this.submitted = true;
    const device = this.ctx.device;
    const uniforms = device.createBuffer({ size: Math.max(PARAM_SLOT, this.params.length * PARAM_SLOT), usage: Usage.UNIFORM | Usage.COPY_DST });
    if (this.params.length > 0) {
      const all = new Uint8Array(this.params.length * PARAM_SLOT);
      this.params.forEach((p, i) => all.set(p, i * PARAM_SLOT));
      device.queue.writeBuffer(uniforms, 0, all);
    }
    const encoder = device.createCommandEncoder();
    let pass: GPUComputePassEncoder | null = null;
    for (const c of this.commands) {
      if (c.kind === 'copy') {
        pass?.end();
        pass = null;
        encoder.copyBufferToBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.size);
        continue;
      }
      pass ??= encoder.beginComputePass();
      const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: uniforms, offset: c.slot * PARAM_SLOT, size: PARAM_SLOT } }];
      c.buffers.forEach((buffer, i) => entries.push({ binding: i + 1, resource: { buffer } }));
      pass.setPipeline(c.pipeline);
      pass.setBindGroup(0, device.createBindGroup({ layout: c.pipeline.getBindGroupLayout(0), entries }));
      pass.dispatchWorkgroups(...c.groups);
    }
    pass?.end();
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
    // Destroying after submit is safe: the memory is freed once the submitted work completes.
    uniforms.destroy();
    for (const cleanup of this.cleanups) cleanup();
    const buffer = staging;
    const done: Promise<ArrayBuffer[]> =
      buffer === null
        ? device.queue.onSubmittedWorkDone().then(() => [])
        : buffer.mapAsync(MAP_MODE_READ).then(() => {
            const mapped = buffer.getMappedRange();
            const out = this.readbacks.map((r, i) => mapped.slice(offsets[i]!, offsets[i]! + r.size));
            buffer.unmap();
            buffer.destroy();
            return out;
          });
    // Callers await `done`; when an error scope fails first they throw that instead, and this keeps the then
    // orphaned rejection from being reported as unhandled.
    done.catch(() => undefined);
    return done;
  }
}

/** The size of a storage buffer asked for `bytes`: at least 16, a multiple of 16. */
export function storageSize(bytes: number): number {
  return Math.max(16, Math.ceil(bytes / 16) * 16);
}

export class GpuContext {
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private readonly scratches = new Map<string, GPUBuffer>();
  readonly device: GPUDevice;
  readonly features: GpuFeatures;
  readonly limits: GpuLimits;
  readonly description: string;
  /** Bytes of the largest storage buffer a kernel can bind whole on this adapter. */
  readonly maxStorageBytes: number;
  /** Bound where a kernel's optional input (e.g. a bias) is absent. */
  readonly dummy: GPUBuffer;

  constructor(private readonly opened: OpenedDevice) {
    this.device = opened.device;
    this.features = opened.features;
    this.limits = opened.limits;
    this.description = opened.description;
    this.maxStorageBytes = Math.min(this.limits.maxBufferSize, this.limits.maxStorageBufferBindingSize);
    this.dummy = this.storage(16, 'dummy');
  }

  pipeline(spec: KernelSpec): GPUComputePipeline {
    const defines = [...(spec.defines ?? [])].sort();
    const constants = spec.constants ?? {};
    const key = `${spec.url.href}|${defines.join(',')}|${JSON.stringify(Object.entries(constants).sort())}`;
    let pipeline = this.pipelines.get(key);
    if (pipeline === undefined) {
      const module = this.device.createShaderModule({ code: shaderSource(spec.url, new Set(defines)), label: spec.url.pathname });
      pipeline = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main', constants } });
      this.pipelines.set(key, pipeline);
    }
    return pipeline;
  }

  recorder(): Recorder {
    return new Recorder(this);
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
      throw new KdnError('ENGINE_UNAVAILABLE', `${label} needs ${bytes} bytes, more than this adapter's ${this.maxStorageBytes}-byte buffer limit.`, {
        hint: 'Use f16 weights, a smaller capacity, or a smaller model.',
      });
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
    const buffer = this.device.createBuffer({ size, label, usage: Usage.STORAGE | Usage.COPY_SRC | Usage.COPY_DST, mappedAtCreation: true });
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

  dispose(): void {
    this.pipelines.clear();
    this.scratches.clear();
    this.opened.release();
  }
}
