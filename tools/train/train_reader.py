#!/usr/bin/env python3
"""Trains KDN's default model to answer from its context: a small Llama on the language-model corpus plus
synthetic reading-comprehension examples (reading.py) laid out as a KDN query, on 2,048-token rows.

Rows pack whole examples ([BOS] + passages + "\\n\\nQuestion: ...\\nAnswer:" + " answer" + EOS) and fill the rest
with corpus text; plain corpus windows make up the other rows. The loss is the mean over answer tokens (and EOS)
plus lm_weight times the mean over corpus and passage tokens; question tokens carry none. The tokenizer is reused.
Checkpoints go to --out as training runs, so a run cut off by its time limit still leaves a model.

    python3 tools/train/train_reader.py --corpus .train/corpus.jsonl.xz .train/man-pages.jsonl.xz \\
        --tokenizer .train/tokenizer.json --eval-set .train/synthetic.json --out out --minutes 6.5
    python3 tools/train/train_reader.py ... --smoke     # tiny model, a few steps, a slice of the data (CPU)
"""

import argparse
import json
import math
import multiprocessing
import random
import string
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reading  # noqa: E402
from export import llama_config, save_model  # noqa: E402
from tokenizer import save_tokenizer  # noqa: E402
from train import encode, evaluate, is_validation, lr_at, samples, training_texts  # noqa: E402

NO_LOSS, LM, ANSWER = 0, 1, 2
BOS_ID, EOS_ID = 0, 1
PROMPT = '\n\nQuestion: {}\nAnswer:'  # kdn/query/prompt.ts questionPrompt
_WORKER: dict[str, object] = {}


def log(msg: str) -> None:
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


def example_tokens(tok: Tokenizer, ex: reading.Example) -> tuple[np.ndarray, np.ndarray]:
    """Ids and loss kinds of one example, each part tokenized on its own as kdn does (chunks, prompt, answer)."""
    parts = tok.encode_batch([*ex.pieces, PROMPT.format(ex.question.strip()), ' ' + ex.answer.strip()],
                             add_special_tokens=False)
    ids, kinds = [BOS_ID], [NO_LOSS]
    for e in parts[:-2]:
        ids += e.ids
        kinds += [LM] * len(e.ids)
    ids += parts[-2].ids
    kinds += [NO_LOSS] * len(parts[-2].ids)
    ids += parts[-1].ids + [EOS_ID]
    kinds += [ANSWER] * (len(parts[-1].ids) + 1)
    return np.array(ids, dtype=np.int16), np.array(kinds, dtype=np.int8)


def _generate(job: tuple[int, int, float, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    n, seed, bridge_share, max_len = job
    corpus: reading.Corpus = _WORKER['corpus']  # type: ignore[assignment]
    tok = Tokenizer.from_file(_WORKER['tokenizer'])  # type: ignore[arg-type]
    out = []
    for ex in reading.make_examples(corpus, n, seed, bridge_share):
        ids, kinds = example_tokens(tok, ex)
        if len(ids) <= max_len:
            out.append((ids, kinds))
    return out


def reading_examples(corpus: reading.Corpus, tokenizer: str, n: int, bridge_share: float, max_len: int,
                     workers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    _WORKER.update(corpus=corpus, tokenizer=tokenizer)
    jobs = [(max(1, n // (workers * 4)), 1000 + i, bridge_share, max_len) for i in range(workers * 4)]
    with multiprocessing.get_context('fork').Pool(workers) as pool:
        return [x for part in pool.imap_unordered(_generate, jobs) for x in part]


def pack_rows(examples: list[tuple[np.ndarray, np.ndarray]], lm: np.ndarray, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of `width` tokens: whole examples back to back, the rest filled with a corpus window."""
    rng = random.Random(seed)
    rng.shuffle(examples)
    rows_ids, rows_kinds = [], []
    i = 0
    while i < len(examples):
        ids, kinds = [], []
        while i < len(examples) and sum(len(x) for x in ids) + len(examples[i][0]) <= width:
            ids.append(examples[i][0])
            kinds.append(examples[i][1])
            i += 1
        used = sum(len(x) for x in ids)
        if used == 0:  # longer than a row (cannot happen: generation caps the length); skip it
            i += 1
            continue
        start = rng.randrange(0, len(lm) - width)
        ids.append(lm[start:start + width - used])
        kinds.append(np.full(width - used, LM, dtype=np.int8))
        rows_ids.append(np.concatenate(ids))
        rows_kinds.append(np.concatenate(kinds))
    return torch.from_numpy(np.stack(rows_ids).astype(np.int64)), torch.from_numpy(np.stack(rows_kinds))


def normalize_answer(text: str) -> list[str]:
    text = text.lower().translate(str.maketrans('', '', string.punctuation + '“”‘’'))
    return [w for w in text.split() if w not in ('a', 'an', 'the')]


def f1(prediction: str, truth: str) -> float:
    p, t = normalize_answer(prediction), normalize_answer(truth)
    common = sum((Counter(p) & Counter(t)).values())
    if common == 0:
        return float(p == t)
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


@torch.no_grad()
def answer_eval(model, tok: Tokenizer, examples: list[dict], device: str, limit: int) -> dict[str, object]:
    """Greedy answers (up to 32 tokens, to EOS or a new line) to held-out examples: exact match and token F1."""
    model.eval()
    by_kind: dict[str, list[tuple[float, float]]] = {}
    shown = []
    for ex in examples[:limit]:
        ids, _ = example_tokens(tok, reading.Example(ex['pieces'], ex['question'], ex['answer'], ex['kind'], '', ''))
        n_answer = len(tok.encode(' ' + ex['answer'].strip(), add_special_tokens=False).ids) + 1
        prompt = torch.from_numpy(ids[None, :-n_answer].astype(np.int64)).to(device)
        out = model.generate(prompt, max_new_tokens=32, do_sample=False, eos_token_id=EOS_ID, pad_token_id=EOS_ID)
        text = tok.decode(out[0, prompt.shape[1]:].tolist(), skip_special_tokens=True).split('\n')[0].strip()
        scores = (float(normalize_answer(text) == normalize_answer(ex['answer'])), f1(text, ex['answer']))
        by_kind.setdefault(ex['kind'], []).append(scores)
        if len(shown) < 12:
            shown.append({'question': ex['question'], 'answer': ex['answer'], 'model': text})
    model.train()
    result: dict[str, object] = {k: {'n': len(v), 'exact': round(sum(s[0] for s in v) / len(v), 3),
                                     'f1': round(sum(s[1] for s in v) / len(v), 3)} for k, v in by_kind.items()}
    result['samples'] = shown
    return result


def loss_of(model, ids: torch.Tensor, kinds: torch.Tensor, device: str, lm_weight: float) -> torch.Tensor:
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == 'cuda'):
        logits = model(input_ids=ids[:, :-1]).logits
    ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction='none')
    k = kinds[:, 1:].reshape(-1)
    answer, lm = k == ANSWER, k == LM
    total = ce.new_zeros(())
    if answer.any():
        total = total + ce[answer].mean()
    if lm.any():
        total = total + lm_weight * ce[lm].mean()
    return total


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description='Train KDN default model to answer from its context.')
    ap.add_argument('--corpus', nargs='+', required=True, help='corpus packs: corpus.jsonl.xz man-pages.jsonl.xz')
    ap.add_argument('--tokenizer', required=True, help='tokenizer.json to reuse')
    ap.add_argument('--eval-set', type=Path, required=True, help='bench/data/answers/synthetic.json')
    ap.add_argument('--out', type=Path, required=True)
    ap.add_argument('--minutes', type=float, default=6.5, help='wall-clock budget of the training loop')
    ap.add_argument('--hidden', type=int, default=256)
    ap.add_argument('--layers', type=int, default=8)
    ap.add_argument('--heads', type=int, default=8)
    ap.add_argument('--kv-heads', type=int, default=4)
    ap.add_argument('--ffn', type=int, default=448)
    ap.add_argument('--seq', type=int, default=2048)
    ap.add_argument('--batch', type=int, default=24)
    ap.add_argument('--reading-rows', type=float, default=0.6, help='share of rows that pack reading examples')
    ap.add_argument('--examples', type=int, default=240_000)
    ap.add_argument('--bridge-share', type=float, default=0.25)
    ap.add_argument('--lm-weight', type=float, default=0.5)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--warmup', type=int, default=200)
    ap.add_argument('--chat-share', type=float, default=0.15)
    ap.add_argument('--workers', type=int, default=max(1, (multiprocessing.cpu_count() or 2) - 2))
    ap.add_argument('--checkpoint-every', type=float, default=100.0, help='seconds between checkpoints')
    ap.add_argument('--max-steps', type=int, default=None)
    ap.add_argument('--eval-limit', type=int, default=100000, help='held-out examples answered at the end')
    ap.add_argument('--compile', action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument('--smoke', action='store_true', help='tiny model, a few steps, a slice of the data')
    args = ap.parse_args()
    if args.smoke:
        args.hidden, args.layers, args.heads, args.kv_heads, args.ffn, args.seq, args.batch = 64, 2, 2, 1, 128, 512, 4
        args.examples, args.max_steps, args.warmup, args.compile, args.checkpoint_every = 400, 6, 2, False, 1e9
        args.eval_limit = 6
    return args


def save(model, tok: Tokenizer, out: Path, log_data: dict[str, object]) -> None:
    save_tokenizer(tok, out, 2048)
    save_model(model, out)
    (out / 'train-log.json').write_text(json.dumps(log_data, indent=2, ensure_ascii=False) + '\n')


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    started = time.time()

    docs = [d for d in reading.load_docs(args.corpus) if not reading.is_eval_doc(d)]
    if args.smoke:
        docs = docs[::40]
    train_docs = [d for d in docs if not is_validation(d)]
    val_docs = [d for d in docs if is_validation(d)]
    tok = Tokenizer.from_file(args.tokenizer)
    lm_ids = encode(tok, training_texts(train_docs, args.chat_share)).numpy().astype(np.int16)
    val_ids = encode(tok, [f'<|begin_of_text|>{d["text"]}<|end_of_text|>' for d in val_docs])
    log(f'{len(train_docs)} training docs ({len(lm_ids)} tokens), {len(val_docs)} validation docs on {device}')

    corpus = reading.Corpus(train_docs)
    corpus.build_subject_index(len(corpus.docs))
    examples = reading_examples(corpus, args.tokenizer, args.examples, args.bridge_share, args.seq + 1, args.workers)
    reading_tokens = sum(len(e[0]) for e in examples)
    rc_ids, rc_kinds = pack_rows(examples, lm_ids, args.seq + 1, 1)
    log(f'{len(examples)} reading examples ({reading_tokens / 1e6:.1f}M tokens) in {len(rc_ids)} rows after '
        f'{time.time() - started:.0f}s')
    eval_set = json.loads(args.eval_set.read_text())['examples']

    config = llama_config(tok.get_vocab_size(), args.hidden, args.layers, args.heads, args.kv_heads, args.ffn,
                          max(2048, args.seq))
    model = LlamaForCausalLM(config).to(device)
    params = sum(p.numel() for p in model.parameters())
    log(f'model: {params} parameters ({params * 2 / 1e6:.2f} MB in fp16)')
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device == 'cuda')
    step_model = torch.compile(model) if args.compile and device == 'cuda' else model

    rc_ids, rc_kinds = rc_ids.to(device), rc_kinds.to(device)
    lm_dev = torch.from_numpy(lm_ids.astype(np.int64)).to(device)
    n_rc = max(1, round(args.batch * args.reading_rows))
    budget = args.minutes * 60
    train_log: dict[str, object] = {
        'hardware': torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu', 'torch': torch.__version__,
        'args': {k: str(v) for k, v in vars(args).items()}, 'parameters': params,
        'train_docs': len(train_docs), 'val_docs': len(val_docs), 'lm_tokens': len(lm_ids),
        'reading_examples': len(examples), 'reading_tokens': reading_tokens, 'reading_rows': len(rc_ids),
        'curve': [], 'evals': [],
    }
    step, tokens_seen, last_ckpt = 0, 0, time.time()
    loop_start = time.time()
    while True:
        progress = (time.time() - loop_start) / budget
        if progress >= 1.0 or (args.max_steps and step >= args.max_steps):
            break
        lr = lr_at(step, progress, args.lr, args.warmup)
        for group in opt.param_groups:
            group['lr'] = lr
        pick = torch.randint(0, len(rc_ids), (n_rc,), device=device)
        starts = torch.randint(0, len(lm_dev) - args.seq - 1, (args.batch - n_rc,), device=device)
        lm_rows = lm_dev[starts[:, None] + torch.arange(args.seq + 1, device=device)[None, :]]
        ids = torch.cat([rc_ids[pick], lm_rows])
        kinds = torch.cat([rc_kinds[pick], torch.full_like(lm_rows, LM, dtype=torch.int8)])
        opt.zero_grad(set_to_none=True)
        try:
            loss = loss_of(step_model, ids, kinds, device, args.lm_weight)
            loss.backward()
        except Exception as e:  # a compile failure must not cost the run: continue eager
            if step_model is model:
                raise
            log(f'torch.compile failed, continuing eager: {e!r:.500}')
            train_log['compile_failed'] = repr(e)[:500]
            step_model = model
            opt.zero_grad(set_to_none=True)
            loss = loss_of(model, ids, kinds, device, args.lm_weight)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += ids.numel()
        if step % 100 == 0 or step <= 3:
            train_log['curve'].append({'step': step, 'loss': round(loss.item(), 4), 'lr': lr,  # type: ignore[union-attr]
                                       'seconds': round(time.time() - loop_start, 1)})
            if step % 500 == 0 or step <= 3:
                log(f'step {step} loss {loss.item():.4f} lr {lr:.2e} {tokens_seen / (time.time() - loop_start) / 1e6:.2f}M tok/s')
        if time.time() - last_ckpt > args.checkpoint_every:
            v = evaluate(model, val_ids, 1024, device, max_windows=64)
            rc = answer_eval(model, tok, eval_set, device, 30)
            train_log['evals'].append({'step': step, 'val_ppl': round(math.exp(v), 2), 'reading': rc})  # type: ignore[union-attr]
            log(f'eval step {step}: val ppl {math.exp(v):.2f}, reading {json.dumps({k: x for k, x in rc.items() if k != "samples"})}')
            train_log.update(steps=step, tokens_seen=tokens_seen, partial=True)
            save(model, tok, args.out, train_log)
            last_ckpt = time.time()
    train_seconds = time.time() - loop_start
    v = evaluate(model, val_ids, 1024, device)
    train_log.update(steps=step, tokens_seen=tokens_seen, train_seconds=round(train_seconds, 1), partial=False,
                     val_loss=round(v, 4), val_ppl=round(math.exp(v), 2))
    save(model, tok, args.out, train_log)
    log(f'saved after {step} steps, {train_seconds:.0f}s, val ppl {math.exp(v):.2f}')
    train_log['reading_eval'] = answer_eval(model, tok, eval_set, device, args.eval_limit)
    log(f'held-out reading: {json.dumps(train_log["reading_eval"], ensure_ascii=False)[:3000]}')
    train_log['samples'] = samples(model, tok, device, 60)
    train_log['wall_seconds'] = round(time.time() - started, 1)
    (args.out / 'train-log.json').write_text(json.dumps(train_log, indent=2, ensure_ascii=False) + '\n')
    for s in train_log['samples']:  # type: ignore[union-attr]
        log(f'[{s["prompt"]} @ {s["temperature"]}] {s["text"]!r}')
    log('done')


if __name__ == '__main__':
    main()
