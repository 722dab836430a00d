/**
 * Opens the forward backend a caller names. WebGPU's module is imported only when asked for, so the CPU path never
 * loads Dawn.
 */
import { KdnError } from '../common/errors.ts';
import type { ForwardBackend } from './backend.ts';
import { createCpuBackend } from './cpu/cpu-backend.ts';
import type { ModelWeights } from './model/weights.ts';
import type { BackendName } from './types.ts';

export interface OpenBackendOptions {
  /** Largest session capacity in tokens (the WebGPU backend sizes its buffers for it). */
  capacity: number;
  /**
   * Whether 'auto' may pick a software adapter (SwiftShader). A server should not: at the model sizes such an adapter
   * can hold, the CPU reference is faster. Benchmarks of the WebGPU path on a CPU-only host do.
   */
  autoTakesSoftware?: boolean;
}

type WebGPUModule = typeof import('./webgpu/webgpu-backend.ts');

async function importWebGPU(): Promise<WebGPUModule> {
  try {
    return await import('./webgpu/webgpu-backend.ts');
  } catch (err) {
    throw new KdnError('ENGINE_UNAVAILABLE', `the WebGPU backend cannot be loaded: ${(err as Error).message}`, {
      hint: 'use --backend cpu',
      cause: err,
    });
  }
}

/** 'auto': WebGPU when an adapter it may take is there and Dawn loads, else the CPU reference. */
export async function openBackend(kind: 'auto' | BackendName, weights: ModelWeights, options: OpenBackendOptions): Promise<ForwardBackend> {
  if (kind === 'cpu') return createCpuBackend(weights);
  let webgpu: WebGPUModule;
  try {
    webgpu = await importWebGPU();
  } catch (err) {
    if (kind === 'auto') return createCpuBackend(weights);
    throw err;
  }
  const probe = await webgpu.probeWebGPU();
  const usable = probe.available && (options.autoTakesSoftware === true || !probe.software);
  if (kind === 'auto' && !usable) return createCpuBackend(weights);
  if (!probe.available) {
    throw new KdnError('ENGINE_UNAVAILABLE', `no WebGPU adapter: ${probe.reason ?? probe.description}`, {
      hint: 'install a Vulkan driver (or SwiftShader on CPU machines), or use --backend cpu',
    });
  }
  return webgpu.createWebGPUBackend(weights, { capacity: options.capacity });
}
