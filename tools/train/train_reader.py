#!/usr/bin/env python3
"""Trains KDN's default model to answer from its context: a small Llama on the language-model corpus plus
synthetic reading-comprehension examples (reading.py) laid out as a KDN query, on 2,048-token rows.

Rows pack whole examples ([BOS] + passages + "\\n\\nQuestion: ...\\nAnswer:" + " answer" + EOS) and fill the rest
with corpus text; plain corpus windows make up the other rows. The loss is the mean over answer tokens (and EOS)
plus lm_weight times the mean over corpus and passage tokens; question tokens carry none. The tokenizer is reused.
Checkpoints go to --out as training runs, so a run cut off by its time limit still leaves a model. A run longer than
one sitting on the GPU machine trains in slices: --plan-minutes is the whole run's training time, which the
learning-rate schedule spans, and each later slice continues with --resume from the state saved in --out
(train-state.pt: weights, optimizer, step and training time so far), with new example seeds.

Examples are made by worker processes while the model trains (rows join the pool as they arrive), so training
starts within seconds. --minutes bounds the whole run up to the final evaluation, which takes well under a minute.
On CUDA the model runs in bf16 autocast with PyTorch's fused attention (scaled_dot_product_attention, causal) and
fused AdamW, compiled with torch.compile unless --no-compile (a failing compile falls back to eager).

    python3 tools/train/train_reader.py --corpus .train/corpus.jsonl.xz .train/man-pages.jsonl.xz \\
        --tokenizer .train/tokenizer.json --eval-set .train/synthetic.json --out out --minutes 7.5
    python3 tools/train/train_reader.py ... --smoke     # tiny model, a few steps, a slice of the data (CPU)
    python3 tools/train/train_reader.py ... --minutes 9 --plan-minutes 24 --no-final-eval  # first of three slices
    python3 tools/train/train_reader.py ... --minutes 9 --plan-minutes 24 --resume         # the last
"""

import time

STARTED = time.time()  # the time budget counts from here, imports included

import argparse
import json
import math
import multiprocessing
import os
import random
import string
import sys
import threading
from collections import Counter
from dataclasses import asdict
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


def _generate(job: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """One shard's examples, tokenized and packed into rows (in a worker process)."""
    n, seed, shard, shards = job
    args: argparse.Namespace = _WORKER['args']  # type: ignore[assignment]
    tok = Tokenizer.from_file(args.tokenizer)
    options = reading.Options(args.counterfactual, args.paraphrase, args.doc_cap, (shard, shards))
    made = reading.make_examples(_WORKER['corpus'], n, seed, args.bridge_share, options)  # type: ignore[arg-type]
    kept = [(ex, example_tokens(tok, ex)) for ex in made]
    kept = [(ex, t) for ex, t in kept if len(t[0]) <= args.seq + 1]
    examples = [t for _, t in kept]
    ids, kinds = pack_rows(examples, _WORKER['lm'], args.seq + 1, seed)  # type: ignore[arg-type]
    stats = {'examples': len(examples), 'tokens': sum(len(e[0]) for e in examples),
             'counterfactual': sum(ex.counterfactual for ex, _ in kept), 'rows': len(ids)}
    return ids, kinds, stats


class RowStream:
    """Reading rows made by a pool of worker processes while training runs; jobs are shards of the documents
    (reading.DocPicker), each with its own seed, so the rows are the same from run to run whatever the timing."""

    def __init__(self, corpus: reading.Corpus, lm: np.ndarray, args: argparse.Namespace, slice_index: int = 0):
        _WORKER.update(corpus=corpus, lm=lm, args=args)  # inherited by the forked workers
        shards = args.shards
        # Each slice of a resumed run draws new examples from the same documents.
        seed = 1000 + 100_000 * slice_index
        jobs = [(-(-args.examples // shards), seed + i, i, shards) for i in range(shards)]
        self.pool = multiprocessing.get_context('fork').Pool(args.workers)
        self.results = self.pool.imap(_generate, jobs)
        self.arrived: list[tuple[np.ndarray, np.ndarray]] = []
        self.stats: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.finished = threading.Event()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for ids, kinds, stats in self.results:
            with self.lock:
                self.arrived.append((ids, kinds))
                self.stats.update(stats)
        self.pool.close()
        self.finished.set()

    def take(self, wait: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """The rows that arrived since the last call (waiting for the first when `wait`), or None."""
        while wait and not self.arrived and not self.finished.is_set():
            time.sleep(0.05)
        with self.lock:
            got, self.arrived = self.arrived, []
        if not got:
            return None
        return np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])

    def stop(self) -> None:
        self.pool.terminate()


def pack_rows(examples: list[tuple[np.ndarray, np.ndarray]], lm: np.ndarray, width: int, seed: int) -> \
        tuple[np.ndarray, np.ndarray]:
    """Rows of `width` tokens: whole examples back to back, the rest filled with a corpus window."""
    rng = random.Random(seed)
    rng.shuffle(examples)
    rows_ids, rows_kinds = [], []
    i = 0
    while i < len(examples):
        ids, kinds = [], []
        used = 0
        while i < len(examples) and used + len(examples[i][0]) <= width:
            ids.append(examples[i][0])
            kinds.append(examples[i][1])
            used += len(examples[i][0])
            i += 1
        start = rng.randrange(0, len(lm) - width)
        ids.append(lm[start:start + width - used])
        kinds.append(np.full(width - used, LM, dtype=np.int8))
        rows_ids.append(np.concatenate(ids))
        rows_kinds.append(np.concatenate(kinds))
    if not rows_ids:
        return np.zeros((0, width), dtype=np.int16), np.zeros((0, width), dtype=np.int8)
    return np.stack(rows_ids), np.stack(rows_kinds)


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
    # Masked means rather than boolean indexing: no host synchronization, and one graph for torch.compile.
    answer, lm = (k == ANSWER).float(), (k == LM).float()
    return (ce * answer).sum() / answer.sum().clamp(min=1) + lm_weight * (ce * lm).sum() / lm.sum().clamp(min=1)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description='Train KDN default model to answer from its context.')
    ap.add_argument('--corpus', nargs='+', required=True, help='corpus packs: corpus.jsonl.xz man-pages.jsonl.xz')
    ap.add_argument('--tokenizer', required=True, help='tokenizer.json to reuse')
    ap.add_argument('--eval-set', type=Path, required=True, help='bench/data/answers/synthetic.json')
    ap.add_argument('--out', type=Path, required=True)
    ap.add_argument('--minutes', type=float, default=7.5,
                    help='wall-clock budget from start to the end of training; the final evaluation follows')
    ap.add_argument('--hidden', type=int, default=256)
    ap.add_argument('--layers', type=int, default=8)
    ap.add_argument('--heads', type=int, default=8)
    ap.add_argument('--kv-heads', type=int, default=4)
    ap.add_argument('--ffn', type=int, default=448)
    ap.add_argument('--seq', type=int, default=2048)
    ap.add_argument('--batch', type=int, default=24)
    ap.add_argument('--reading-rows', type=float, default=0.6, help='share of rows that pack reading examples')
    ap.add_argument('--examples', type=int, default=160_000, help='reading examples made (one pass of the data)')
    ap.add_argument('--bridge-share', type=float, default=0.25)
    ap.add_argument('--counterfactual', type=float, default=0.5,
                    help='share of examples whose answer is swapped for a span of the same kind from another document')
    ap.add_argument('--paraphrase', type=float, default=0.5, help='share of questions asked in other words')
    ap.add_argument('--doc-cap', type=int, default=40, help='the most examples one document gives')
    ap.add_argument('--shards', type=int, default=64, help='generation jobs, each over its own share of documents')
    ap.add_argument('--show', type=int, default=0, help='print this many counterfactual examples before training')
    ap.add_argument('--lm-weight', type=float, default=0.5)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--warmup', type=int, default=200)
    ap.add_argument('--chat-share', type=float, default=0.15)
    ap.add_argument('--workers', type=int, default=max(1, (multiprocessing.cpu_count() or 2) - 2))
    ap.add_argument('--checkpoint-every', type=float, default=120.0, help='seconds between checkpoints')
    ap.add_argument('--plan-minutes', type=float, default=None,
                    help="the whole run's training time over all its slices, which the schedule spans "
                         '(default: this slice alone)')
    ap.add_argument('--resume', action='store_true', help='continue the run whose train-state.pt is in --out')
    ap.add_argument('--final-eval', action=argparse.BooleanOptionalAction, default=True,
                    help='evaluate at the end (leave out for all but the last slice)')
    ap.add_argument('--max-steps', type=int, default=None)
    ap.add_argument('--eval-limit', type=int, default=100000, help='held-out examples answered at the end')
    ap.add_argument('--compile', action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument('--smoke', action='store_true', help='tiny model, a few steps, a slice of the data')
    args = ap.parse_args()
    if args.resume and args.plan_minutes is None:
        # Without it the schedule would start over within this slice: the learning rate back at its peak.
        ap.error('--resume needs --plan-minutes, the same as the earlier slices had')
    if args.smoke:
        args.hidden, args.layers, args.heads, args.kv_heads, args.ffn, args.seq, args.batch = 64, 2, 2, 1, 128, 512, 4
        args.examples, args.max_steps, args.warmup, args.compile, args.checkpoint_every = 400, 6, 2, False, 1e9
        args.eval_limit, args.shards, args.show = 6, 4, 3
    return args


def save(model, tok: Tokenizer, out: Path, log_data: dict[str, object]) -> None:
    save_tokenizer(tok, out, 2048)
    save_model(model, out)
    (out / 'train-log.json').write_text(json.dumps(log_data, indent=2, ensure_ascii=False) + '\n')


STATE_FILE = 'train-state.pt'


def save_state(out: Path, model, opt, progress: dict[str, object]) -> None:
    """What a later slice needs to continue: weights, optimizer moments, step, time trained, the log so far."""
    tmp = out / f'{STATE_FILE}.tmp'
    torch.save({'model': model.state_dict(), 'opt': opt.state_dict(), **progress}, tmp)
    os.replace(tmp, out / STATE_FILE)  # atomic: a slice killed mid-save keeps the previous state


def load_state(out: Path) -> dict:
    if not (out / STATE_FILE).exists():
        raise SystemExit(f'--resume: no {STATE_FILE} in {out}; run the first slice without --resume')
    return torch.load(out / STATE_FILE, map_location='cpu', weights_only=False)


def show_examples(corpus: reading.Corpus, args: argparse.Namespace) -> None:
    """Prints a few counterfactual examples, with the context around the swapped answer, to read them."""
    options = reading.Options(args.counterfactual, args.paraphrase, args.doc_cap)
    shown = 0
    for ex in reading.make_examples(corpus, 200, 1, args.bridge_share, options):
        if not ex.counterfactual or shown >= args.show:
            continue
        context = ''.join(ex.pieces)
        at = context.find(ex.answer)
        log(f'counterfactual {ex.kind}/{ex.rule} ({ex.source}): Q: {ex.question} | A: {ex.answer} | '
            f'in context: {at >= 0} | ...{context[max(0, at - 160):at + len(ex.answer) + 80]!r}...')
        shown += 1


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    deadline = STARTED + args.minutes * 60

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
    if args.show:
        show_examples(corpus, args)
    state = load_state(args.out) if args.resume else None
    slice_index = state['slice'] + 1 if state else 0
    # Fork the workers before CUDA starts in this process; they only use the CPU.
    stream = RowStream(corpus, lm_ids, args, slice_index)
    eval_set = json.loads(args.eval_set.read_text())['examples']

    config = llama_config(tok.get_vocab_size(), args.hidden, args.layers, args.heads, args.kv_heads, args.ffn,
                          max(2048, args.seq))
    config._attn_implementation = 'sdpa'  # F.scaled_dot_product_attention, causal (no mask is passed)
    model = LlamaForCausalLM(config).to(device)
    params = sum(p.numel() for p in model.parameters())
    log(f'model: {params} parameters ({params * 2 / 1e6:.2f} MB in fp16), {config._attn_implementation} attention')
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device == 'cuda')

    def eager_loss(ids: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        return loss_of(model, ids, kinds, device, args.lm_weight)

    if state:
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['opt'])  # moves the moments to the parameters' device
        log(f'resumed at step {state["step"]} after {state["trained_seconds"]:.0f}s of training (slice {slice_index})')

    step_loss = torch.compile(eager_loss) if args.compile and device == 'cuda' else eager_loss

    lm_dev = torch.from_numpy(lm_ids.astype(np.int64)).to(device)
    first = stream.take(wait=True)
    if first is None:
        raise SystemExit('no reading examples were made')
    rc_ids = torch.from_numpy(first[0].astype(np.int32)).to(device)
    rc_kinds = torch.from_numpy(first[1]).to(device)
    n_rc = max(1, round(args.batch * args.reading_rows))
    train_log: dict[str, object] = state['train_log'] if state else {
        'hardware': torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu', 'torch': torch.__version__,
        'args': {k: str(v) for k, v in vars(args).items()}, 'parameters': params,
        'train_docs': len(train_docs), 'val_docs': len(val_docs), 'lm_tokens': len(lm_ids),
        'curve': [], 'evals': [],
    }
    train_log['slices'] = slice_index + 1
    step, tokens_seen = (state['step'], state['tokens_seen']) if state else (0, 0)
    trained_before: float = state['trained_seconds'] if state else 0.0
    loop_start = last_ckpt = time.time()
    plan_seconds = args.plan_minutes * 60 if args.plan_minutes else None

    def checkpoint() -> None:
        save(model, tok, args.out, train_log)
        save_state(args.out, model, opt, {'step': step, 'tokens_seen': tokens_seen, 'slice': slice_index,
                                          'trained_seconds': trained_before + time.time() - loop_start,
                                          'train_log': train_log})

    log(f'training from {loop_start - STARTED:.0f}s after start, until {deadline - STARTED:.0f}s')
    while True:
        now = time.time()
        if now >= deadline or (args.max_steps and step >= args.max_steps):
            break
        if step % 25 == 0 and (new := stream.take()) is not None:  # rows made since: join the pool
            rc_ids = torch.cat([rc_ids, torch.from_numpy(new[0].astype(np.int32)).to(device)])
            rc_kinds = torch.cat([rc_kinds, torch.from_numpy(new[1]).to(device)])
        progress = ((trained_before + now - loop_start) / plan_seconds if plan_seconds
                    else (now - loop_start) / max(1.0, deadline - loop_start))
        lr = lr_at(step, progress, args.lr, args.warmup)
        for group in opt.param_groups:
            group['lr'] = lr
        pick = torch.randint(0, len(rc_ids), (n_rc,), device=device)
        starts = torch.randint(0, len(lm_dev) - args.seq - 1, (args.batch - n_rc,), device=device)
        lm_rows = lm_dev[starts[:, None] + torch.arange(args.seq + 1, device=device)[None, :]]
        ids = torch.cat([rc_ids[pick].long(), lm_rows])
        kinds = torch.cat([rc_kinds[pick], torch.full_like(lm_rows, LM, dtype=torch.int8)])
        opt.zero_grad(set_to_none=True)
        try:
            loss = step_loss(ids, kinds)
            loss.backward()
        except Exception as e:  # a compile failure must not cost the run: continue eager
            if step_loss is eager_loss:
                raise
            log(f'torch.compile failed, continuing eager: {e!r:.500}')
            train_log['compile_failed'] = repr(e)[:500]
            step_loss = eager_loss
            opt.zero_grad(set_to_none=True)
            loss = step_loss(ids, kinds)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += ids.numel()
        if step % 100 == 0 or step <= 3:
            train_log['curve'].append({'step': step, 'loss': round(loss.item(), 4), 'lr': lr,  # type: ignore[union-attr]
                                       'rows': len(rc_ids), 'seconds': round(time.time() - STARTED, 1)})
            if step % 500 == 0 or step <= 3:
                log(f'step {step} loss {loss.item():.4f} lr {lr:.2e} {len(rc_ids)} reading rows '
                    f'{tokens_seen / (time.time() - loop_start) / 1e6:.2f}M tok/s')
        if time.time() - last_ckpt > args.checkpoint_every and deadline - time.time() > 30:
            v = evaluate(model, val_ids, 1024, device, max_windows=32)
            rc = answer_eval(model, tok, eval_set, device, 20)
            train_log['evals'].append({'step': step, 'val_ppl': round(math.exp(v), 2), 'reading': rc})  # type: ignore[union-attr]
            log(f'eval step {step}: val ppl {math.exp(v):.2f}, reading {json.dumps({k: x for k, x in rc.items() if k != "samples"})}')
            train_log.update(steps=step, tokens_seen=tokens_seen, partial=True, data=dict(stream.stats))
            checkpoint()
            last_ckpt = time.time()
    stream.stop()
    train_seconds = trained_before + time.time() - loop_start
    train_log.update(steps=step, tokens_seen=tokens_seen, train_seconds=round(train_seconds, 1), partial=False,
                     reading_rows=len(rc_ids), data=dict(stream.stats),
                     options=asdict(reading.Options(args.counterfactual, args.paraphrase, args.doc_cap)))
    checkpoint()  # the trained model first: the evaluations below only add to the log
    log(f'saved after {step} steps, {train_seconds:.0f}s of training, data made: {dict(stream.stats)}')
    if not args.final_eval:
        log(f'no final evaluation; continue with --resume (state in {args.out / STATE_FILE})')
        return
    v = evaluate(model, val_ids, 1024, device)
    train_log.update(val_loss=round(v, 4), val_ppl=round(math.exp(v), 2))
    log(f'val ppl {math.exp(v):.2f}')
    train_log['reading_eval'] = answer_eval(model, tok, eval_set, device, args.eval_limit)
    log(f'held-out reading: {json.dumps(train_log["reading_eval"], ensure_ascii=False)[:3000]}')
    train_log['samples'] = samples(model, tok, device, 60)
    train_log['wall_seconds'] = round(time.time() - STARTED, 1)
    (args.out / 'train-log.json').write_text(json.dumps(train_log, indent=2, ensure_ascii=False) + '\n')
    for s in train_log['samples']:  # type: ignore[union-attr]
        log(f'[{s["prompt"]} @ {s["temperature"]}] {s["text"]!r}')
    log(f'done after {time.time() - STARTED:.0f}s')


if __name__ == '__main__':
    main()
