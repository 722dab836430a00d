import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { TempModels } from './temp-models.ts';

const run = promisify(execFile);
const KDN = fileURLToPath(new URL('../../bin/kdn.js', import.meta.url));

async function kdn(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [KDN, ...args], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('engine cli: kdn generate and kdn model-info', () => {
  const models = new TempModels();
  after(() => models.cleanup());

  it('model-info --json prints the architecture, parameters, KV bytes per token and fingerprint', async () => {
    const m = await models.make({ architecture: 'Qwen3ForCausalLM' });
    const r = await kdn(['model-info', '--model', m.dir, '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const info = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(info).to.include({ architecture: 'Qwen3ForCausalLM', layers: 2, kvHeads: 2, headDim: 32, kvBytesPerToken: 2 * 2 * 2 * 32 * 2 });
    expect(info.fingerprint).to.match(/^[0-9a-f]{64}$/);
    const text = await kdn(['model-info', '--model', m.dir]);
    expect(text.stdout)
      .to.contain('Qwen3ForCausalLM')
      .and.contain(info.fingerprint as string);
  });

  it('generate streams text and reports time to first token and tokens/s', async () => {
    const m = await models.make({ architecture: 'LlamaForCausalLM' });
    const r = await kdn(['generate', '--model', m.dir, '--backend', 'cpu', '--max-tokens', '8', '--chat', 'Hello there']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.length).to.be.greaterThan(1);
    expect(r.stderr)
      .to.match(/time to first token [\d.]+ ms/)
      .and.match(/[\d.]+ tokens\/s/);
  });

  it('without --model uses the shipped model; a missing model directory is a clear error', async () => {
    const demo = await kdn(['model-info', '--json']);
    expect(demo.code, demo.stderr).to.equal(0);
    expect((JSON.parse(demo.stdout) as { path: string }).path).to.match(/models[/\\]kdn-reader$/);
    const missing = await kdn(['model-info', '--model', '/nonexistent/model']);
    expect(missing.code).to.equal(1);
    expect(missing.stderr).to.contain('MODEL_INVALID').and.contain('/nonexistent/model/config.json');
  });
});
