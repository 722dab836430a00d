import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTinyModel, type TinyModel, type TinyModelOptions } from '../../tools/make-tiny-models.ts';

/** A temp directory for one test file's models, removed by `cleanup()` (call it in `after`). */
export class TempModels {
  private root: string | undefined;
  private count = 0;

  async make(options: TinyModelOptions): Promise<TinyModel> {
    this.root ??= await mkdtemp(join(tmpdir(), 'kdn-engine-test-'));
    return makeTinyModel(join(this.root, `m${this.count++}`), options);
  }

  async dir(): Promise<string> {
    this.root ??= await mkdtemp(join(tmpdir(), 'kdn-engine-test-'));
    return this.root;
  }

  async cleanup(): Promise<void> {
    if (this.root) await rm(this.root, { recursive: true, force: true });
    this.root = undefined;
  }
}

export const ARCHITECTURES = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM'] as const;
