import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run as runAnswers } from '../../bench/answers.ts';
import { exactMatch, tokenF1 } from '../../bench/lib/answer-score.ts';
import type { BenchRecord } from '../../bench/report.ts';
import { makeTinyModel } from '../../tools/make-tiny-models.ts';

const CODECS = ['fp16', 'fp16+lz4', 'int8', 'int8+lz4', 'int4', 'int4+lz4'];

describe('answer scoring', () => {
  it('normalizes case, punctuation and articles, and gives partial credit by shared words', () => {
    expect(exactMatch('The King.', 'king')).to.equal(1);
    expect(exactMatch('a king of Moab', 'king')).to.equal(0);
    expect(tokenF1('the king of Moab', 'king')).to.be.closeTo(0.5, 1e-9); // precision 1/3, recall 1
    expect(tokenF1('Naomi', 'Ruth')).to.equal(0);
    expect(tokenF1('', '')).to.equal(1);
  });
});

describe('answers benchmark on a tiny model', () => {
  let root: string;
  let model: string;
  let examples: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'kdn-answers-test-'));
    model = (await makeTinyModel(join(root, 'llama'), { architecture: 'LlamaForCausalLM' })).dir;
    examples = join(root, 'examples.json');
    const pieces = ['Ruth went to Bethlehem with Naomi.\n\n', 'Orpah stayed in Moab.\n\n'];
    await writeFile(
      examples,
      JSON.stringify({
        examples: [
          { kind: 'single', rule: 'subject', source: 'test', question: 'Who stayed in Moab?', answer: 'Orpah', pieces },
          { kind: 'bridge', rule: 'bridge-name', source: 'test', question: 'Who went with the one who stayed?', answer: 'Ruth', pieces },
        ],
      }),
    );
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('reports recall, every mode x codec by question kind, and natural questions over retrieved chunks', async () => {
    const checkpoints: number[] = [];
    const report = await runAnswers(
      ['--model', model, '--synthetic', examples, '--natural', '2', '--max-new', '4'],
      async (partial) => void checkpoints.push(partial.records.length),
    );
    const section = (name: string): BenchRecord[] => report.records.filter((r) => r.section === name);

    const retrieval = section('retrieval');
    expect(retrieval.length).to.be.at.least(2);
    for (const r of retrieval) {
      expect(r.recall_at_1 as number).to.be.within(0, 1);
      expect(r.recall_at_4 as number).to.be.at.least(r.recall_at_1 as number);
    }

    const synthetic = section('synthetic');
    expect(synthetic.map((r) => `${r.mode}|${r.codec}`)).to.deep.equal([
      'recompute|none (prefill)',
      ...CODECS.map((c) => `prefix-chained|${c}`),
      ...CODECS.map((c) => `independent|${c}`),
      ...CODECS.map((c) => `blend|${c}`),
    ]);
    for (const r of synthetic) {
      expect(r.n_single).to.equal(1);
      expect(r.n_bridge).to.equal(1);
      expect(r.f1_single as number).to.be.within(0, 1);
      expect(r.exact_bridge as number).to.be.within(0, 1);
    }
    // The pieces' own KV through fp16 objects is the recompute's context: the same answers.
    expect(synthetic.find((r) => r.mode === 'prefix-chained' && r.codec === 'fp16')!.same_answer_as_recompute).to.equal(1);
    expect(checkpoints).to.have.length(2);

    const natural = section('natural');
    expect(natural.find((r) => String(r.codec).endsWith('all'))!.n).to.equal(2);
  });

  it('runs a transform level only when named, through a table fitted as ingest fits it', async () => {
    const report = await runAnswers([
      '--model',
      model,
      '--synthetic',
      examples,
      '--sections',
      'synthetic',
      '--modes',
      'recompute,prefix-chained',
      '--codecs',
      'int8,transform:x4',
      '--max-new',
      '4',
    ]);
    expect(report.records.map((r) => `${r.mode}|${r.codec}`)).to.deep.equal([
      'recompute|none (prefill)',
      'prefix-chained|int8',
      'prefix-chained|transform:x4',
    ]);
    expect(report.records[2]!.same_answer_as_recompute as number).to.be.within(0, 1);
    expect(report.params?.transformTable).to.match(/^fitted on the shipped calibration text, [0-9a-f]{12}$/);
    const err = await runAnswers(['--model', model, '--synthetic', examples, '--codecs', 'transform:x3']).catch((e: unknown) => e);
    expect((err as { code?: string }).code).to.equal('INVALID_ARGUMENT');
  });
});
