#!/usr/bin/env python3
"""Writes the held-out reading-comprehension set of the answers benchmark (bench/answers.ts) from the documents
that training never sees (reading.is_eval_doc), with the same rules as the training examples.

    python3 tools/train/make_eval_set.py --corpus .tmp/corpus/corpus.jsonl.xz .tmp/corpus/man-pages.jsonl.xz \\
        --out bench/data/answers/synthetic.json
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reading import Corpus, is_eval_doc, load_docs, make_examples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--corpus', nargs='+', required=True)
    ap.add_argument('--out', type=Path, required=True)
    ap.add_argument('--single', type=int, default=60)
    ap.add_argument('--bridge', type=int, default=40)
    ap.add_argument('--seed', type=int, default=2026)
    args = ap.parse_args()
    docs = load_docs(args.corpus)
    held = [d for d in docs if is_eval_doc(d)]
    corpus = Corpus(held, word_stats=docs)
    corpus.build_subject_index(len(corpus.docs))
    seen: set[str] = set()
    picked = {'single': [], 'bridge': []}
    wanted = {'single': args.single, 'bridge': args.bridge}
    seed = args.seed
    while any(len(picked[k]) < wanted[k] for k in picked):
        seed += 1
        share = 0.0 if len(picked['single']) < wanted['single'] else 1.0
        for e in make_examples(corpus, 20, seed, share):
            if e.question not in seen and len(picked[e.kind]) < wanted[e.kind]:
                seen.add(e.question)
                picked[e.kind].append(e)
    examples = picked['single'] + picked['bridge']
    out = {
        'about': 'Held-out reading-comprehension examples for bench/answers.ts, made by tools/train/make_eval_set.py '
                 'with the rules of tools/train/reading.py from documents training never sees (reading.is_eval_doc). '
                 'Each context is the pieces in order after the sink token, then the question prompt of kdn/query/prompt.ts.',
        'heldout_documents': len(corpus.docs),
        'examples': [{'kind': e.kind, 'rule': e.rule, 'source': e.source, 'question': e.question, 'answer': e.answer,
                      'pieces': e.pieces} for e in examples],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    print(f'{len(examples)} examples from {len(corpus.docs)} held-out documents -> {args.out}')


if __name__ == '__main__':
    main()
