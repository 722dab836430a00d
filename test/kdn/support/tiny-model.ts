import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { makeTinyModel } from '../../../tools/make-tiny-models.ts';

export interface TestModel {
  dir: string;
  /** 'shipped' when models/kdn-reader is present, else a random tiny model made for the test. */
  kind: 'shipped' | 'tiny';
  cleanup(): Promise<void>;
}

/** The shipped model when it is in the tree (meaningful answers), else a tiny random Llama in a temp dir. */
export async function testModel(options: { preferShipped?: boolean } = {}): Promise<TestModel> {
  const demo = resolve('models/kdn-reader');
  if (options.preferShipped !== false && existsSync(join(demo, 'config.json')) && existsSync(join(demo, 'model.safetensors'))) {
    return { dir: demo, kind: 'shipped', cleanup: async () => {} };
  }
  const root = await mkdtemp(join(tmpdir(), 'kdn-model-'));
  const dir = join(root, 'llama');
  await makeTinyModel(dir, { architecture: 'LlamaForCausalLM', seed: 1 });
  return { dir, kind: 'tiny', cleanup: () => rm(root, { recursive: true, force: true }) };
}
