#!/usr/bin/env python3
"""Trains kdn-demo, the language model that was the default before kdn-reader, and the byte-level BPE tokenizer
both use: a small Llama (GQA) on the Debian text corpus.

Reads the pack from tools/corpus/build_corpus.py, trains for a fixed wall-clock budget (cosine schedule over
that time, or over an epoch cap if the data runs out first), keeps the weights with the best validation
loss, and writes a Hugging Face model directory plus train-log.json.

    python3 tools/train/train.py --corpus .tmp/corpus/corpus.jsonl.xz --out .tmp/kdn-demo --minutes 8.5
    python3 tools/train/train.py --smoke --out /tmp/smoke     # tiny model, 20 steps, a slice of the corpus
"""

import argparse
import hashlib
import json
import lzma
import math
import random
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export import llama_config, save_model  # noqa: E402
from tokenizer import BOS, EOS, chat_prompt, save_tokenizer, train_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DICTIONARIES = {'gcide', 'foldoc', 'jargon', 'devil'}
PROMPTS = ('In the beginning', 'The Debian project', 'A hacker is', 'Python is a programming language that',
           'And the LORD said unto Moses,', 'To install a package,')
CHAT_QUESTIONS = ('What is a kernel?', 'What does the word "wisdom" mean?')


def log(msg: str) -> None:
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


def load_docs(path: Path, limit: int | None) -> list[dict[str, str]]:
    docs = []
    with lzma.open(path, 'rt', encoding='utf-8') as f:
        for line in f:
            docs.append(json.loads(line))
            if limit and len(docs) >= limit:
                break
    return docs


def is_validation(doc: dict[str, str]) -> bool:
    """A stable 1% of documents, by hash of source and id."""
    return hashlib.md5(f'{doc["source"]}/{doc["id"]}'.encode()).digest()[0] < 3


def training_texts(docs: list[dict[str, str]], chat_share: float) -> list[str]:
    """Each document framed by BOS/EOS; a share of dictionary entries also as a chat turn, to teach the template."""
    rng = random.Random(0)
    texts = []
    for d in docs:
        texts.append(f'{BOS}{d["text"]}{EOS}')
        if d['source'] in DICTIONARIES and rng.random() < chat_share:
            question = rng.choice(('What is {}?', 'What does "{}" mean?', 'Define {}.', 'Tell me about {}.'))
            texts.append(f'{BOS}{chat_prompt(question.format(d["id"]))}{d["text"]}{EOS}')
    rng.shuffle(texts)
    return texts


def encode(tok, texts: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for i in range(0, len(texts), 4096):
        for e in tok.encode_batch(texts[i:i + 4096], add_special_tokens=False):
            ids.extend(e.ids)
    return torch.tensor(ids, dtype=torch.int32)


def lr_at(step: int, progress: float, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_step(model, opt, batch: torch.Tensor, device: str) -> torch.Tensor:
    """Forward and backward of one batch; the optimizer step is the caller's."""
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == 'cuda'):
        logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
    loss.backward()
    return loss


@torch.no_grad()
def evaluate(model, stream: torch.Tensor, seq: int, device: str, max_windows: int = 256) -> float:
    """Mean next-token loss over contiguous, non-overlapping windows of the stream."""
    model.eval()
    n = min((len(stream) - 1) // seq, max_windows)
    total, count = 0.0, 0
    for i in range(0, n, 16):
        rows = [stream[j * seq:(j * seq) + seq + 1] for j in range(i, min(n, i + 16))]
        batch = torch.stack(rows).to(device, dtype=torch.long)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == 'cuda'):
            logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction='sum')
        total += loss.item()
        count += batch[:, 1:].numel()
    model.train()
    return total / max(count, 1)


@torch.no_grad()
def generate(model, tok, prompt_ids: list[int], device: str, new_tokens: int, temperature: float,
             top_k: int = 40) -> str:
    """Plain decoding loop (no cache; the model is tiny): greedy at temperature 0, else top-k sampling."""
    model.eval()
    ids = torch.tensor([prompt_ids], device=device)
    out: list[int] = []
    g = torch.Generator(device=device).manual_seed(1234)
    for _ in range(new_tokens):
        logits = model(input_ids=ids[:, -model.config.max_position_embeddings:]).logits[0, -1].float()
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            vals, idx = torch.topk(logits / temperature, top_k)
            nxt = int(idx[torch.multinomial(torch.softmax(vals, -1), 1, generator=g)])
        if nxt == 1:
            break
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], dim=1)
    model.train()
    return tok.decode(out, skip_special_tokens=False)


def samples(model, tok, device: str, new_tokens: int) -> list[dict[str, str]]:
    result = []
    for p in PROMPTS:
        ids = [0] + tok.encode(p, add_special_tokens=False).ids
        for temp in (0.0, 0.8):
            result.append({'prompt': p, 'temperature': temp, 'text': generate(model, tok, ids, device, new_tokens, temp)})
    for q in CHAT_QUESTIONS:
        ids = [0] + tok.encode(chat_prompt(q), add_special_tokens=False).ids
        result.append({'prompt': f'chat: {q}', 'temperature': 0.0, 'text': generate(model, tok, ids, device, new_tokens, 0.0)})
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description='Train kdn-demo, a language model only, and the tokenizer.')
    ap.add_argument('--corpus', type=Path, default=REPO / '.tmp/corpus/corpus.jsonl.xz')
    ap.add_argument('--heldout', type=Path, default=REPO / 'bench/data/heldout')
    ap.add_argument('--out', type=Path, required=True)
    ap.add_argument('--minutes', type=float, default=8.5, help='wall-clock budget of the training loop')
    ap.add_argument('--max-epochs', type=float, default=10.0, help='cap on passes over the training tokens')
    ap.add_argument('--vocab', type=int, default=6144)
    ap.add_argument('--hidden', type=int, default=256)
    ap.add_argument('--layers', type=int, default=6)
    ap.add_argument('--heads', type=int, default=4)
    ap.add_argument('--kv-heads', type=int, default=2)
    ap.add_argument('--ffn', type=int, default=640)
    ap.add_argument('--seq', type=int, default=1024)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--warmup', type=int, default=300)
    ap.add_argument('--chat-share', type=float, default=0.15)
    ap.add_argument('--eval-every', type=float, default=10.0, help='seconds between validation passes')
    ap.add_argument('--max-docs', type=int, default=None)
    ap.add_argument('--max-steps', type=int, default=None)
    ap.add_argument('--compile', action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument('--smoke', action='store_true', help='tiny model, 20 steps, 3000 documents')
    args = ap.parse_args()
    if args.smoke:
        args.vocab, args.hidden, args.layers, args.ffn, args.seq, args.batch = 512, 64, 2, 128, 128, 8
        args.max_docs, args.max_steps, args.warmup, args.eval_every, args.compile = 3000, 20, 5, 1e9, False
    args.out.mkdir(parents=True, exist_ok=True)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    started = time.time()

    docs = load_docs(args.corpus, args.max_docs)
    train_docs = [d for d in docs if not is_validation(d)]
    val_docs = [d for d in docs if is_validation(d)]
    log(f'{len(train_docs)} training docs, {len(val_docs)} validation docs on {device}')
    tok = train_tokenizer((d['text'] for d in train_docs), args.vocab)
    log(f'tokenizer: {tok.get_vocab_size()} tokens')
    train_ids = encode(tok, training_texts(train_docs, args.chat_share))
    val_ids = encode(tok, [f'{BOS}{d["text"]}{EOS}' for d in val_docs])
    train_bytes = sum(len(d['text'].encode()) for d in train_docs)
    log(f'{len(train_ids)} training tokens ({train_bytes / len(train_ids):.2f} bytes/token), {len(val_ids)} validation')

    config = llama_config(tok.get_vocab_size(), args.hidden, args.layers, args.heads, args.kv_heads, args.ffn,
                          max(2048, args.seq))
    model = LlamaForCausalLM(config).to(device)
    params = sum(p.numel() for p in model.parameters())
    log(f'model: {params} parameters ({params * 2 / 1e6:.2f} MB in fp16)')
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device == 'cuda')
    step_model = model
    if args.compile and device == 'cuda':
        step_model = torch.compile(model)

    budget = args.minutes * 60
    max_tokens = args.max_epochs * len(train_ids)
    tokens_per_step = args.batch * args.seq
    train_ids_dev = train_ids.to(device)
    offsets_hi = len(train_ids) - args.seq - 1
    step, tokens_seen, loss_ema = 0, 0, None
    curve: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    best = {'val_loss': float('inf'), 'step': 0, 'state': None}
    loop_start = last_eval = time.time()
    compile_failed = None
    while True:
        elapsed = time.time() - loop_start
        progress = max(elapsed / budget, tokens_seen / max_tokens)
        if progress >= 1.0 or (args.max_steps and step >= args.max_steps):
            break
        lr = lr_at(step, progress, args.lr, args.warmup)
        for group in opt.param_groups:
            group['lr'] = lr
        starts = torch.randint(0, offsets_hi, (args.batch,), device=device)
        idx = starts[:, None] + torch.arange(args.seq + 1, device=device)[None, :]
        batch = train_ids_dev[idx].long()
        try:
            loss = train_step(step_model, opt, batch, device)
        except Exception as e:  # a compile failure must not cost the run: fall back to eager
            if step_model is model:
                raise
            compile_failed = repr(e)[:500]
            log(f'torch.compile failed, continuing eager: {compile_failed}')
            step_model = model
            loss = train_step(model, opt, batch, device)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += tokens_per_step
        if step % 50 == 0 or step <= 3 or args.smoke:
            value = loss.item()
            loss_ema = value if loss_ema is None else 0.9 * loss_ema + 0.1 * value
            curve.append({'step': step, 'tokens': tokens_seen, 'loss': round(value, 4), 'lr': lr,
                          'seconds': round(time.time() - loop_start, 1)})
            if step % 500 == 0 or step <= 3 or args.smoke:
                log(f'step {step} loss {value:.4f} lr {lr:.2e} tokens {tokens_seen / 1e6:.1f}M '
                    f'({tokens_seen / max(time.time() - loop_start, 1e-9) / 1e6:.2f}M tok/s)')
        if time.time() - last_eval > args.eval_every:
            last_eval = time.time()
            v = evaluate(model, val_ids, args.seq, device)
            evals.append({'step': step, 'tokens': tokens_seen, 'val_loss': round(v, 4), 'val_ppl': round(math.exp(v), 2),
                          'seconds': round(time.time() - loop_start, 1)})
            log(f'eval step {step}: val loss {v:.4f} ppl {math.exp(v):.2f}')
            if v < best['val_loss']:
                best = {'val_loss': v, 'step': step, 'state': {k: t.detach().clone() for k, t in model.state_dict().items()}}
    train_seconds = time.time() - loop_start
    final_val = evaluate(model, val_ids, args.seq, device)
    evals.append({'step': step, 'tokens': tokens_seen, 'val_loss': round(final_val, 4),
                  'val_ppl': round(math.exp(final_val), 2), 'seconds': round(train_seconds, 1)})
    log(f'final: step {step} val loss {final_val:.4f} ppl {math.exp(final_val):.2f} after {train_seconds:.0f}s')
    kept_step = step
    if best['state'] is not None and best['val_loss'] < final_val:
        model.load_state_dict(best['state'])
        kept_step, final_val = best['step'], best['val_loss']
        log(f'keeping the weights of step {kept_step} (val loss {final_val:.4f})')

    # Written before sampling, so a sampling failure still leaves a usable model.
    save_tokenizer(tok, args.out, max(2048, args.seq))
    save_model(model, args.out)
    log(f'saved to {args.out}')

    train_log: dict[str, object] = {
        'hardware': torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu',
        'torch': torch.__version__, 'args': {k: str(v) for k, v in vars(args).items()},
        'parameters': params, 'vocab_size': tok.get_vocab_size(),
        'train_docs': len(train_docs), 'val_docs': len(val_docs),
        'train_tokens': len(train_ids), 'val_tokens': len(val_ids),
        'bytes_per_token': round(train_bytes / len(train_ids), 3),
        'steps': step, 'kept_step': kept_step, 'tokens_seen': tokens_seen,
        'epochs': round(tokens_seen / len(train_ids), 2), 'tokens_per_step': tokens_per_step,
        'train_seconds': round(train_seconds, 1), 'compile_failed': compile_failed,
        'train_loss_curve': curve[:: max(1, len(curve) // 60)] + curve[-1:],
        'final_train_loss_ema': loss_ema, 'evals': evals,
        'val_loss': round(final_val, 4), 'val_ppl': round(math.exp(final_val), 3),
    }
    try:
        heldout = {}
        for f in sorted(args.heldout.glob('*.txt')):
            stream = torch.tensor([0] + tok.encode(f.read_text(), add_special_tokens=False).ids + [1], dtype=torch.int32)
            loss = evaluate(model, stream, len(stream) - 1, device)
            heldout[f.name] = {'tokens': len(stream), 'loss': round(loss, 4), 'ppl': round(math.exp(loss), 2)}
        train_log['heldout_bench_docs'] = heldout
        train_log['samples'] = samples(model, tok, device, 80 if not args.smoke else 10)
    except Exception:
        train_log['samples_error'] = traceback.format_exc()
        log(train_log['samples_error'])
    train_log['wall_seconds'] = round(time.time() - started, 1)
    (args.out / 'train-log.json').write_text(json.dumps(train_log, indent=2, ensure_ascii=False) + '\n')
    for s in train_log.get('samples', []):
        log(f'[{s["prompt"]} @ {s["temperature"]}] {s["text"]!r}')
    log('done')


if __name__ == '__main__':
    main()
