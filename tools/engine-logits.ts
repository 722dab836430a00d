/**
 * Prints, as one JSON line, the engine's last-position logits for a token prompt and its greedy continuation.
 * The other side of tools/gpu/compare-transformers.py:
 *   node --import tsx tools/engine-logits.ts --model DIR --backend webgpu --tokens 1,2,3 --steps 32
 */
import { parseArgs } from 'node:util';
import { createEngine } from '../engine-adapter/index.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    backend: { type: 'string', default: 'auto' },
    tokens: { type: 'string' },
    steps: { type: 'string', default: '32' },
  },
});
if (!values.model || !values.tokens) {
  process.stderr.write('usage: engine-logits.ts --model DIR --tokens 1,2,3 [--backend auto|webgpu|cpu] [--steps N]\n');
  process.exit(2);
}
const backend = values.backend as 'auto' | 'webgpu' | 'cpu';
const prompt = values.tokens.split(',').map((t) => Number.parseInt(t, 10));
const steps = Number.parseInt(values.steps, 10);

const engine = await createEngine({ modelDir: values.model, backend, capacity: prompt.length + steps + 8 });
const session = engine.createSession();
const lastLogits = await session.prefill(prompt);
// No stop tokens: the comparison runs a fixed number of greedy steps on both sides.
const result = await session.generate({ maxTokens: steps, temperature: 0, ignoreEos: true });
session.dispose();
process.stdout.write(
  `${JSON.stringify({ device: engine.device, backend: engine.backend, lastLogits: Array.from(lastLogits), greedy: result.tokens })}\n`,
);
await engine.dispose();
