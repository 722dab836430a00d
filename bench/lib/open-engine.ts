/** Opens the engine a speed benchmark runs: a model directory (real weights) or a synthetic shape (random weights). */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { KdnError } from '../../common/errors.ts';
import { createEngine, createEngineInWorker, type BackendName } from '../../engine-adapter/index.ts';
import { readJsonConfig } from './read-config.ts';
import { DEFAULT_MODEL_DIR } from '../../kdn/default-model.ts';
import { SYNTHETIC_SHAPES, type HfConfig } from './shapes.ts';
import { asBenchEngine, createSyntheticEngine, type BenchEngine } from './synthetic-engine.ts';
import { createSyntheticEngineInWorker } from './synthetic-engine-thread.ts';

export interface EngineTarget {
  /** Shape name for records: a synthetic shape, 'shipped', or the model directory's name. */
  shape: string;
  /** The config transformers builds the peer from. */
  hfConfig: HfConfig;
  /** Set for real-weight models. */
  modelDir?: string;
}

/** Resolves --shape / --model into what to open; --model wins and names a model directory. */
export async function resolveTarget(shape: string, modelDir: string | undefined): Promise<EngineTarget> {
  const dir = modelDir ?? (shape === 'shipped' ? DEFAULT_MODEL_DIR : undefined);
  if (dir !== undefined) {
    const abs = resolve(dir);
    if (!existsSync(join(abs, 'config.json'))) {
      throw new KdnError('NOT_FOUND', `no model at ${abs} (config.json missing)`, {
        hint:
          shape === 'shipped' && modelDir === undefined
            ? 'the shipped model (models/kdn-reader) is missing here: use --shape tiny'
            : 'pass a Hugging Face model directory',
      });
    }
    return {
      shape: modelDir === undefined ? 'shipped' : abs.split('/').pop()!,
      hfConfig: await readJsonConfig(join(abs, 'config.json')),
      modelDir: abs,
    };
  }
  const hfConfig = SYNTHETIC_SHAPES[shape];
  if (!hfConfig) {
    throw new KdnError('INVALID_ARGUMENT', `unknown shape "${shape}"`, {
      hint: `use one of shipped, ${Object.keys(SYNTHETIC_SHAPES).join(', ')}`,
    });
  }
  return { shape, hfConfig };
}

/** How a benchmark's engine is opened besides its backend and capacity. */
export interface BenchEngineOptions {
  /** The engine's hot tier (engine-adapter/hot-tier.ts), its default size when absent. */
  hotTierBytes?: number;
  /** The engine on its own thread, as kdn runs it (its objects' blocks then go there from the fetch threads directly). */
  thread?: boolean;
}

export async function openBenchEngine(
  target: EngineTarget,
  backend: 'auto' | BackendName,
  capacity: number,
  options: BenchEngineOptions = {},
): Promise<BenchEngine> {
  const { thread = false, hotTierBytes } = options;
  const hot = hotTierBytes === undefined ? {} : { hotTierBytes };
  if (target.modelDir === undefined) {
    const open = thread ? createSyntheticEngineInWorker : createSyntheticEngine;
    return open(target.shape, target.hfConfig, { backend, capacity, ...hot });
  }
  const engineOptions = { modelDir: target.modelDir, backend, capacity, ...hot };
  return asBenchEngine(await (thread ? createEngineInWorker(engineOptions) : createEngine(engineOptions)));
}
