/**
 * Finding and opening the WebGPU device: the best adapter Dawn offers (a GPU through Vulkan; on CPU machines
 * SwiftShader from Debian's chromium package), the features the kernels can use, and the adapter's real limits
 * (the defaults are far too small for model weights).
 */
import { existsSync } from 'node:fs';
import { create } from 'webgpu';
import { KdnError } from '../../common/errors.ts';

const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
/** allow_unsafe_apis exposes subgroups and subgroup matrices; the NVIDIA toggle exposes shader-f16 there. */
const DAWN_TOGGLES = 'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia';

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

export interface GpuFeatures {
  shaderF16: boolean;
  subgroups: boolean;
}

export interface GpuLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxStorageBuffersPerShaderStage: number;
  maxComputeWorkgroupsPerDimension: number;
  minUniformBufferOffsetAlignment: number;
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

/** Opens the best adapter with its real limits and the optional features the kernels use. */
export async function openDevice(): Promise<OpenedDevice> {
  preferSoftwareVulkanIfNeeded();
  let gpu: GPU | undefined;
  try {
    gpu = create([DAWN_TOGGLES]);
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

  const wanted: GPUFeatureName[] = [];
  if (adapter.features.has('shader-f16')) wanted.push('shader-f16');
  if (adapter.features.has('subgroups')) wanted.push('subgroups');
  const requiredLimits: Record<string, number> = {};
  for (const name of RAISED_LIMITS) requiredLimits[name] = adapter.limits[name];

  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures: wanted, requiredLimits });
  } catch (err) {
    throw unavailable(`The WebGPU device could not be created: ${(err as Error).message}`, err);
  }
  const description = describe(adapter.info);
  const l = device.limits;
  // Holding the Dawn instance keeps the device alive; dropping it on release lets Node exit.
  const holder: { gpu?: GPU } = { gpu };
  return {
    device,
    features: { shaderF16: device.features.has('shader-f16'), subgroups: device.features.has('subgroups') },
    limits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      minUniformBufferOffsetAlignment: l.minUniformBufferOffsetAlignment,
    },
    description,
    software: isSoftware(adapter.info),
    release() {
      device.destroy();
      delete holder.gpu;
    },
  };
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
