/**
 * Finding and opening the WebGPU device: the best adapter Dawn offers (a GPU through Vulkan; on CPU machines
 * SwiftShader from Debian's chromium package), the features the kernels can use, and the adapter's real limits
 * (the defaults are far too small for model weights).
 */
import { existsSync } from 'node:fs';
import { create } from 'webgpu';
import { KdnError } from '../../common/errors.ts';
import { paceDawnPolling } from './dawn-poll-pacing.ts';
import { kernelLabel, shaderSource } from './shader-source.ts';

const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
/**
 * allow_unsafe_apis exposes subgroups and subgroup matrices; the NVIDIA toggle exposes shader-f16 there.
 * disable_robustness drops the bounds clamps Tint adds to every array access, which made the matmul's 128 x 128
 * tiles about 2.3x slower on the H200 (docs/GPU.md). Every kernel checks its own bounds, and the tests run them on
 * ragged shapes. KDN_DAWN_TOGGLES adds more toggles, for experiments.
 */
const DAWN_TOGGLES = 'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_robustness';
/** Kernel timings (timed Recorders) need timestamps at full resolution; quantization guards browsers, not us. */
const DAWN_DISABLED_TOGGLES = 'disable-dawn-features=timestamp_quantization';

/** Limits the kernels need raised from WebGPU's defaults to whatever the adapter supports. */
const RAISED_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupsPerDimension',
] as const;

/** How this Dawn's WGSL spells the layout of subgroupMatrixLoad/Store (it changed between Dawn versions). */
export type SubgroupMatrixSyntax = 'bool-arg' | 'template-arg';

export interface GpuFeatures {
  shaderF16: boolean;
  subgroups: boolean;
  /** GPU timestamps around compute passes (timed Recorders, for profiling). */
  timestampQuery: boolean;
  /**
   * Tensor-core matrix multiply from WGSL: set where the adapter lists an f16 x f16 -> f32 subgroup-matrix
   * configuration of 16x16x16 (the shape the kernels are written for) and its WGSL compiles; null elsewhere.
   */
  subgroupMatrix: { syntax: SubgroupMatrixSyntax } | null;
  /** Why subgroupMatrix is null (no feature, no fitting configuration, or the kernels' build error). */
  subgroupMatrixAbsence: string | null;
}

export interface GpuLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxStorageBuffersPerShaderStage: number;
  maxComputeWorkgroupsPerDimension: number;
  minUniformBufferOffsetAlignment: number;
  minStorageBufferOffsetAlignment: number;
}

export interface OpenedDevice {
  device: GPUDevice;
  features: GpuFeatures;
  limits: GpuLimits;
  /** e.g. "nvidia ada (vulkan)" or "google swiftshader (software)". */
  description: string;
  /** A software adapter (SwiftShader): correct but slower than the CPU reference backend for small models. */
  software: boolean;
  /** Destroys the device and drops the Dawn instance so Node can exit. */
  release(): void;
}

export interface ProbeResult {
  available: boolean;
  description: string;
  software: boolean;
  reason?: string;
}

/** On a CPU machine without a Vulkan driver configured, use SwiftShader when it is installed. */
function preferSoftwareVulkanIfNeeded(): void {
  if (process.env.VK_DRIVER_FILES === undefined && process.env.VK_ICD_FILENAMES === undefined && existsSync(SWIFTSHADER_ICD)) {
    process.env.VK_DRIVER_FILES = SWIFTSHADER_ICD;
  }
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
}

function isSoftware(info: GPUAdapterInfo): boolean {
  return (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
}

function describe(info: GPUAdapterInfo): string {
  const name = [info.vendor, info.architecture || info.device].filter((s) => s !== '').join(' ') || info.description || 'unknown adapter';
  return `${name} (${isSoftware(info) ? 'software' : 'vulkan'})`;
}

function unavailable(message: string, cause?: unknown): KdnError {
  return new KdnError('ENGINE_UNAVAILABLE', message, {
    hint: 'Install a Vulkan driver (on CPU machines: apt-get install chromium, for SwiftShader) or use --backend cpu.',
    cause,
  });
}

const SUBGROUP_MATRIX = 'chromium-experimental-subgroup-matrix' as GPUFeatureName;

interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

function hasF16MatrixConfig(adapter: GPUAdapter): boolean {
  if (!adapter.features.has(SUBGROUP_MATRIX) || !adapter.features.has('shader-f16')) return false;
  // The kernels index subgroups as 32 consecutive invocations.
  const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  if ((info.subgroupMinSize ?? 32) !== 32 || (info.subgroupMaxSize ?? 32) !== 32) return false;
  const configs =
    (adapter.info as GPUAdapterInfo & { subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[] }).subgroupMatrixConfigs ?? [];
  return configs.some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === 16 && c.N === 16 && c.K === 16);
}

/**
 * The tensor-core kernels; the feature counts as present only where all of them build into pipelines. The matmuls are
 * built as the engine runs them, on weights in blocks (gpu-matrix.ts).
 * workgroupBytes: the sizes of each WGSL's workgroup arrays (keep in step with them).
 */
const TENSOR_KERNELS: { url: URL; defines: string[]; workgroupBytes: number }[] = [
  { url: new URL('./kernels/matmul-subgroup-matrix.wgsl', import.meta.url), defines: ['W_BLOCKS'], workgroupBytes: 24576 },
  { url: new URL('./kernels/matmul-subgroup-matrix-short.wgsl', import.meta.url), defines: ['W_BLOCKS'], workgroupBytes: 19456 },
  { url: new URL('./kernels/attention-subgroup-matrix.wgsl', import.meta.url), defines: [], workgroupBytes: 34320 },
  { url: new URL('./kernels/attention-subgroup-matrix.wgsl', import.meta.url), defines: ['HEAD_DIM_128'], workgroupBytes: 42512 },
];

/** The tensor-core kernels' names ("file define ..."), in the order the device probe builds them. */
export function tensorKernelNames(): string[] {
  return TENSOR_KERNELS.map((k) => kernelLabel(k.url, k.defines));
}

/**
 * Which spelling of subgroupMatrixLoad/Store this Dawn accepts (the newer template form first), found by building
 * the tensor-core kernels in it; null when neither builds (then the portable kernels serve).
 */
async function subgroupMatrixSyntax(device: GPUDevice): Promise<{ syntax: SubgroupMatrixSyntax } | { reason: string }> {
  const kernels = TENSOR_KERNELS.filter((k) => k.workgroupBytes <= device.limits.maxComputeWorkgroupStorageSize);
  const errors: string[] = [];
  for (const syntax of ['template-arg', 'bool-arg'] as const) {
    let ok = true;
    for (const kernel of kernels) {
      const defines = new Set([...kernel.defines, ...(syntax === 'template-arg' ? ['SGMAT_TEMPLATE'] : [])]);
      device.pushErrorScope('validation');
      const module = device.createShaderModule({ code: shaderSource(kernel.url, defines), label: `probe ${kernel.url.pathname}` });
      device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
      const error = await device.popErrorScope();
      if (error !== null) {
        ok = false;
        errors.push(`${syntax} ${[...defines].join(',')}: ${error.message.slice(0, 600)}`);
      }
    }
    if (ok) return { syntax };
  }
  return { reason: `the tensor-core kernels do not build here: ${errors.join(' | ')}` };
}

/** Opens the best adapter with its real limits and the optional features the kernels use. */
export async function openDevice(): Promise<OpenedDevice> {
  const { gpu, adapter } = await openAdapter();
  const { device, matrixConfig } = await requestDevice(adapter);
  const l = device.limits;
  // Holding the Dawn instance keeps the device alive; dropping it on release lets Node exit.
  const holder: { gpu?: GPU } = { gpu };
  const shaderF16 = device.features.has('shader-f16');
  const probe =
    matrixConfig && shaderF16 && device.features.has(SUBGROUP_MATRIX)
      ? await subgroupMatrixSyntax(device)
      : { reason: 'the adapter lists no f16 16x16x16 subgroup-matrix configuration with 32-wide subgroups' };
  return {
    device,
    features: {
      shaderF16,
      subgroups: device.features.has('subgroups'),
      timestampQuery: device.features.has('timestamp-query'),
      subgroupMatrix: 'syntax' in probe ? { syntax: probe.syntax } : null,
      subgroupMatrixAbsence: 'reason' in probe ? probe.reason : null,
    },
    limits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      minUniformBufferOffsetAlignment: l.minUniformBufferOffsetAlignment,
      minStorageBufferOffsetAlignment: l.minStorageBufferOffsetAlignment,
    },
    description: describe(adapter.info),
    software: isSoftware(adapter.info),
    release() {
      device.destroy();
      delete holder.gpu;
    },
  };
}

/** Dawn, with this project's toggles (and KDN_DAWN_TOGGLES'), and its best adapter. */
async function openAdapter(): Promise<{ gpu: GPU; adapter: GPUAdapter }> {
  preferSoftwareVulkanIfNeeded();
  paceDawnPolling();
  let gpu: GPU;
  try {
    const extra = process.env.KDN_DAWN_TOGGLES;
    gpu = create([extra ? `${DAWN_TOGGLES},${extra}` : DAWN_TOGGLES, DAWN_DISABLED_TOGGLES]);
  } catch (err) {
    throw unavailable(`WebGPU could not start: ${(err as Error).message}`, err);
  }
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (err) {
    throw unavailable(`No WebGPU adapter: ${(err as Error).message}`, err);
  }
  if (adapter === null) throw unavailable('No WebGPU adapter found.');
  return { gpu, adapter };
}

/** The adapter's device with the optional features the kernels use that it has, and its limits raised to its own. */
async function requestDevice(adapter: GPUAdapter): Promise<{ device: GPUDevice; matrixConfig: boolean }> {
  const wanted: GPUFeatureName[] = [];
  if (adapter.features.has('shader-f16')) wanted.push('shader-f16');
  if (adapter.features.has('subgroups')) wanted.push('subgroups');
  if (adapter.features.has('timestamp-query')) wanted.push('timestamp-query');
  const matrixConfig = hasF16MatrixConfig(adapter);
  if (matrixConfig) wanted.push(SUBGROUP_MATRIX);
  const requiredLimits: Record<string, number> = {};
  for (const name of RAISED_LIMITS) requiredLimits[name] = adapter.limits[name];
  try {
    return { device: await adapter.requestDevice({ requiredFeatures: wanted, requiredLimits }), matrixConfig };
  } catch (err) {
    throw unavailable(`The WebGPU device could not be created: ${(err as Error).message}`, err);
  }
}

/** Whether a WebGPU adapter can be opened here, and which; never throws. */
export async function probeWebGPU(): Promise<ProbeResult> {
  try {
    const opened = await openDevice();
    const { description, software } = opened;
    opened.release();
    return { available: true, description, software };
  } catch (err) {
    return { available: false, description: 'none', software: false, reason: (err as Error).message };
  }
}

/**
 * Runs `record` inside validation and out-of-memory error scopes and turns any GPU error into KdnError
 * ENGINE_UNAVAILABLE. Scopes are a device-wide stack: an asynchronous `record` must not overlap other GPU work
 * (only start-up uses one); forward passes record synchronously.
 */
export async function withErrorScopes<T>(device: GPUDevice, what: string, record: () => T | Promise<T>): Promise<T> {
  device.pushErrorScope('validation');
  device.pushErrorScope('out-of-memory');
  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: await record() };
  } catch (error) {
    outcome = { ok: false, error };
  }
  const oom = device.popErrorScope();
  const validation = device.popErrorScope();
  const [oomError, validationError] = await Promise.all([oom, validation]);
  const gpuError = oomError ?? validationError;
  if (gpuError) {
    throw new KdnError('ENGINE_UNAVAILABLE', `WebGPU error during ${what}: ${gpuError.message}`, {
      hint: oomError ? 'The GPU ran out of memory: use a smaller capacity or model.' : 'This is a bug in a WebGPU kernel.',
    });
  }
  if (!outcome.ok) throw outcome.error;
  return outcome.value;
}
