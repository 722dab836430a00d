/**
 * The README's walk-through, as written: every `npx kdn upload` and `npx kdn query` line of its code block runs
 * against `kdn serve` on its defaults (the shipped model, 256-token chunks, int8), and every answer the README quotes
 * for a query is the answer the shipped model gives. A README edit that breaks a line, or a model or engine change
 * that stops answering, fails here.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { QueryResponse } from '../../kdn/client/api-client.ts';
import { DEFAULT_MODEL_DIR } from '../../kdn/default-model.ts';
import { cliJson, startKdnServe, type Started } from '../../fixtures/processes.ts';

interface WalkthroughLine {
  args: string[];
  /** The answer quoted in the line's comment, if any. */
  answer?: string;
}

/** Splits a shell command line of plain words and double-quoted strings (all the walk-through uses). */
function shellWords(line: string): string[] {
  return [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
}

async function walkthroughLines(): Promise<WalkthroughLine[]> {
  const readme = await readFile('README.md', 'utf8');
  const section = readme.slice(readme.indexOf('## Walk-through'));
  const block = section.slice(section.indexOf('```sh') + 5, section.indexOf('```', section.indexOf('```sh') + 5));
  return block
    .split('\n')
    .filter((line) => /^npx kdn (upload|query) /.test(line))
    .map((line) => {
      const [command, comment = ''] = line.split(/\s+#\s/, 2);
      const quoted = comment.match(/"([^"]+)"\s*$/);
      const args = shellWords(command!)
        .slice(2)
        .filter((a) => a !== '--json');
      return { args, ...(quoted ? { answer: quoted[1] } : {}) };
    });
}

describe('README walk-through on the shipped model', function () {
  this.timeout(600_000);
  let dir: string;
  let server: Started | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-walkthrough-'));
    server = await startKdnServe({ model: DEFAULT_MODEL_DIR, dataDir: join(dir, 'data') });
  });

  after(async () => {
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('uploads the documents and answers each query as the README says', async () => {
    const lines = await walkthroughLines();
    expect(lines.filter((l) => l.args[0] === 'upload')).to.have.length(1);
    expect(lines.filter((l) => l.answer !== undefined)).to.have.length.greaterThanOrEqual(3);
    const env = { KDN_SERVER: server!.ready.url };
    for (const line of lines) {
      if (line.args[0] === 'upload') {
        await cliJson(line.args, env);
        continue;
      }
      const response = await cliJson<QueryResponse>(line.args, env);
      console.log(`      kdn ${line.args.join(' ')} -> ${JSON.stringify(response.answer)}`);
      if (line.answer !== undefined) expect(response.answer.trim()).to.equal(line.answer);
    }
  });
});
