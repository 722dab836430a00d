import { InvalidArgumentError, Option, type Command } from 'commander';
import { createEngine } from '../../../engine-adapter/index.ts';
import { DEFAULT_MODEL_DIR } from '../../default-model.ts';

interface GenerateFlags {
  model?: string;
  backend: 'auto' | 'webgpu' | 'cpu';
  maxTokens: number;
  temperature: number;
  topP: number;
  seed?: number;
  chat?: boolean;
}

function numberFlag(name: string, integer: boolean): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n)))
      throw new InvalidArgumentError(`${name} must be ${integer ? 'an integer' : 'a number'}`);
    return n;
  };
}

/**
 * `kdn generate --model DIR "prompt"`: streams the completion to stdout, then prints time to first token (prompt
 * prefill included) and decode speed to stderr so stdout stays the text alone.
 */
async function generate(prompt: string, flags: GenerateFlags): Promise<void> {
  const engine = await createEngine({ modelDir: flags.model ?? DEFAULT_MODEL_DIR, backend: flags.backend });
  const abort = new AbortController();
  const onSigint = (): void => abort.abort();
  process.once('SIGINT', onSigint);
  try {
    const tok = engine.tokenizer;
    const ids = flags.chat
      ? tok.encode(tok.applyChatTemplate([{ role: 'user', content: prompt }]), { addSpecialTokens: false })
      : tok.encode(prompt);
    const session = engine.createSession();
    const started = performance.now();
    await session.prefill(ids);
    const prefillMs = performance.now() - started;
    const result = await session.generate(
      { maxTokens: flags.maxTokens, temperature: flags.temperature, topP: flags.topP, seed: flags.seed, signal: abort.signal },
      (t) => process.stdout.write(t.text),
    );
    const ttft = prefillMs + result.firstTokenMs;
    const decodeMs = result.totalMs - result.firstTokenMs;
    const rate = result.tokens.length > 1 && decodeMs > 0 ? ((result.tokens.length - 1) * 1000) / decodeMs : 0;
    process.stdout.write('\n');
    process.stderr.write(
      `[${engine.backend}: ${engine.device}] prompt ${ids.length} tokens, time to first token ${ttft.toFixed(1)} ms, ` +
        `${result.tokens.length} tokens at ${rate.toFixed(1)} tokens/s (${result.finishReason})\n`,
    );
    session.dispose();
  } finally {
    process.off('SIGINT', onSigint);
    await engine.dispose();
  }
}

export function register(program: Command): void {
  program
    .command('generate')
    .description('generate text from a prompt with a local model')
    .argument('<prompt>', 'prompt text')
    .option('--model <dir>', 'Hugging Face model directory (default: the shipped reader model, models/kdn-reader)')
    .addOption(new Option('--backend <backend>', 'compute backend').choices(['auto', 'webgpu', 'cpu']).default('auto'))
    .option('--max-tokens <n>', 'most tokens to generate', numberFlag('--max-tokens', true), 128)
    .option('--temperature <t>', 'sampling temperature; 0 is greedy', numberFlag('--temperature', false), 0)
    .option('--top-p <p>', 'nucleus sampling probability mass', numberFlag('--top-p', false), 1)
    .option('--seed <n>', 'sampling seed', numberFlag('--seed', true))
    .option('--chat', 'wrap the prompt in the model chat template as a user message')
    .action(generate);
}
