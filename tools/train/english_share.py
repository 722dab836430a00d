#!/usr/bin/env python3
"""How English a model's free generation is: the share of generated words that are dictionary words.

The dictionary is every word that GCIDE (the Collaborative International Dictionary of English, GPL-2+, in
the corpus pack, tools/corpus) uses in its headwords and definitions, about 99,000 lower-cased words. Each model
continues the opening sentence of every held-out prose document (bench/data/heldout/) and the sample prompts of
train.py, sampled as `kdn generate` samples (the model's generation config: temperature 0.8, top-k 40), several
seeds each, and greedily. Models given together are measured on the same prompts and seeds.

    git archive add84e8 models/kdn-demo | tar -x -C /tmp      # the earlier default, to compare against
    python3 tools/train/english_share.py --corpus .tmp/corpus/corpus.jsonl.xz \\
        --models models/kdn-reader /tmp/models/kdn-demo --out bench/results/english-share.json
"""

import argparse
import json
import lzma
import re
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import PROMPTS  # noqa: E402

WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
HELD_OUT = Path(__file__).resolve().parents[2] / 'bench' / 'data' / 'heldout'


def dictionary(corpus: Path) -> set[str]:
    words: set[str] = set()
    with lzma.open(corpus, 'rt', encoding='utf-8') as f:
        for line in f:
            doc = json.loads(line)
            if doc['source'] == 'gcide':
                words.update(w.lower() for w in WORD.findall(doc['text']))
    return words


def prompts() -> list[str]:
    openings = []
    for path in sorted(HELD_OUT.glob('*.txt')):
        first = next(p for p in path.read_text(encoding='utf-8').split('\n') if len(p.split()) >= 6)
        openings.append(' '.join(first.split()[:8]))
    return openings + list(PROMPTS)


def share(texts: list[str], words: set[str]) -> tuple[float, int]:
    found = [w.lower() for t in texts for w in WORD.findall(t)]
    return (sum(w in words for w in found) / len(found) if found else 0.0), len(found)


def measure(model_dir: str, words: set[str], seeds: int, tokens: int) -> dict[str, object]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sampled, greedy = [], []
    for prompt in prompts():
        ids = torch.tensor([[tok.bos_token_id] + tok(prompt, add_special_tokens=False).input_ids])
        for seed in range(seeds):
            torch.manual_seed(seed)
            out = model.generate(ids, max_new_tokens=tokens, do_sample=True, temperature=0.8, top_k=40)
            sampled.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
        out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
        greedy.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    s, n = share(sampled, words)
    g, m = share(greedy, words)
    return {'model': model_dir, 'sampled': {'dictionary_share': round(s, 4), 'words': n},
            'greedy': {'dictionary_share': round(g, 4), 'words': m}, 'sample': sampled[0][:300]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--corpus', type=Path, required=True, help='corpus.jsonl.xz of tools/corpus (holds GCIDE)')
    ap.add_argument('--models', nargs='+', required=True)
    ap.add_argument('--seeds', type=int, default=4)
    ap.add_argument('--tokens', type=int, default=64)
    ap.add_argument('--out', type=Path)
    args = ap.parse_args()
    words = dictionary(args.corpus)
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()
    report = {'name': 'english-share', 'commit': commit,
              'command': 'python3 tools/train/english_share.py ' + ' '.join(sys.argv[1:]),
              'dictionary_words': len(words), 'prompts': prompts(), 'seeds': args.seeds, 'tokens': args.tokens,
              'records': [measure(m, words, args.seeds, args.tokens) for m in args.models]}
    text = json.dumps(report, indent=1, ensure_ascii=False) + '\n'
    if args.out:
        args.out.write_text(text, encoding='utf-8')
    print(text)


if __name__ == '__main__':
    main()
