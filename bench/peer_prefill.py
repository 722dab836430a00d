#!/usr/bin/env python3
"""The peer a user would otherwise run: Hugging Face transformers (bf16, sdpa) on the same random-weight model shape.

Times full prefill of N tokens with logits_to_keep=1 up to the first greedy token (median of --reps after --warmup
runs), and with --decode K the greedy decode of K tokens after that prefill.
With --host-hit Q it also times the engine a user runs with a host-memory KV tier (a local hit): the first N - Q
tokens' KV (bf16) is computed once and kept in pinned host memory; timed is copying it to the GPU (non_blocking, then
synchronize) into a DynamicCache and prefilling the last Q tokens over it up to the first greedy token.
Prints one JSON object on stdout:
  {"available": true, "device": ..., "torch": ..., "transformers": ..., "results": [{"tokens": N, "prefill_ms": ...,
   "decode_tok_s": ..., "host_hit_ms": ..., "host_hit_copy_ms": ..., "host_hit_bytes": ...} | {"tokens": N, "error": "..."}]}
or {"available": false, "reason": "..."} where torch or a CUDA device is missing (exit status 0 either way).

  python3 bench/peer_prefill.py --config-json '{...config.json...}' --tokens 1024,4096 [--decode 32] [--host-hit 64]
"""
import argparse
import json
import statistics
import sys
import time


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def build_model(cfg: dict, torch, transformers):
    arch = cfg["architectures"][0]
    config_class = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    fields = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype", "dtype")}
    config = config_class(**fields)
    config.architectures = [arch]
    model_class = getattr(transformers, arch)
    # Built straight on the GPU in bf16: random init there takes seconds where a host-side init of 8B takes minutes.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            config._attn_implementation = "sdpa"
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(torch.bfloat16).eval()


def cache_pairs(cache) -> list:
    """(key, value) per layer of a cache as the installed transformers returns it: a DynamicCache whose layers hold
    .keys/.values (4.56 on), one with key_cache/value_cache lists (before), or the legacy tuple of tuples."""
    layers = getattr(cache, "layers", None)
    if layers and hasattr(layers[0], "keys"):
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [(pair[0], pair[1]) for pair in cache]


def idle(rep: int, warmup: int, ms: int) -> None:
    """Leaves the GPU idle before a measured rep, as the benchmark leaves it before each of KDN's queries."""
    if rep >= warmup and ms > 0:
        time.sleep(ms / 1000)


def host_hit(model, torch, transformers, ids, question: int, warmup: int, reps: int, idle_ms: int) -> dict:
    """Median time to first token of a local host-memory hit: the context's KV copied from pinned memory, then the
    question prefilled over it."""
    context, tail = ids[:, :-question], ids[:, -question:]
    out = model(input_ids=context, logits_to_keep=1, use_cache=True)
    pinned = [(k.to("cpu").contiguous().pin_memory(), v.to("cpu").contiguous().pin_memory())
              for k, v in cache_pairs(out.past_key_values)]
    del out
    torch.cuda.empty_cache()
    total_ms, copy_ms = [], []
    for rep in range(warmup + reps):
        torch.cuda.synchronize()
        idle(rep, warmup, idle_ms)
        t0 = time.perf_counter()
        cache = transformers.DynamicCache()
        for layer, (k, v) in enumerate(pinned):
            cache.update(k.to("cuda", non_blocking=True), v.to("cuda", non_blocking=True), layer)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        out = model(input_ids=tail, past_key_values=cache, use_cache=True, logits_to_keep=1)
        int(out.logits[0, -1].argmax().item())
        t2 = time.perf_counter()
        del out, cache
        if rep >= warmup:
            total_ms.append((t2 - t0) * 1000)
            copy_ms.append((t1 - t0) * 1000)
    return {
        "host_hit_ms": statistics.median(total_ms),
        "host_hit_runs_ms": total_ms,
        "host_hit_copy_ms": statistics.median(copy_ms),
        "host_hit_bytes": sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in pinned),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config-json", required=True, help="the model's config.json as a JSON string")
    ap.add_argument("--tokens", required=True, help="comma-separated prefill lengths")
    ap.add_argument("--decode", type=int, default=0, help="greedy decode steps to time after each prefill")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=0, help="stop starting new lengths after this long")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--host-hit", type=int, default=0,
                    help="also time a host-memory KV hit: the last Q tokens prefilled over the rest's KV copied in")
    ap.add_argument("--idle-ms", type=int, default=0, help="milliseconds the GPU idles before each measured rep")
    args = ap.parse_args()
    started = time.perf_counter()
    try:
        import torch
        import transformers
    except ImportError as err:
        emit({"available": False, "reason": f"python3 cannot import torch/transformers: {err}"})
        return 0
    if not torch.cuda.is_available():
        emit({"available": False, "reason": "torch finds no CUDA device"})
        return 0

    cfg = json.loads(args.config_json)
    torch.manual_seed(args.seed)
    model = build_model(cfg, torch, transformers)
    vocab = cfg["vocab_size"]
    sync = torch.cuda.synchronize
    results = []

    def prefill(ids):
        out = model(input_ids=ids, logits_to_keep=1, use_cache=True)
        return out, out.logits[0, -1].argmax()

    for n in [int(t) for t in args.tokens.split(",") if t]:
        if args.max_seconds and time.perf_counter() - started > args.max_seconds:
            results.append({"tokens": n, "error": f"skipped: --max-seconds {args.max_seconds} budget reached"})
            continue
        try:
            ids = torch.randint(0, vocab, (1, n), device="cuda")
            prefill_ms, decode_s = [], []
            with torch.inference_mode():
                for rep in range(args.warmup + args.reps):
                    sync()
                    idle(rep, args.warmup, args.idle_ms)
                    t0 = time.perf_counter()
                    out, token = prefill(ids)
                    token = int(token.item())
                    elapsed = time.perf_counter() - t0
                    if args.decode > 0:
                        past = out.past_key_values
                        step = torch.tensor([[token]], device="cuda")
                        sync()
                        t1 = time.perf_counter()
                        for _ in range(args.decode):
                            out = model(input_ids=step, past_key_values=past, use_cache=True)
                            past = out.past_key_values
                            step = out.logits[:, -1:].argmax(-1)
                            step.item()  # a greedy loop needs each token on the host before the next step
                        decode_elapsed = time.perf_counter() - t1
                    del out
                    if rep >= args.warmup:
                        prefill_ms.append(elapsed * 1000)
                        if args.decode > 0:
                            decode_s.append(decode_elapsed)
            record = {"tokens": n, "prefill_ms": statistics.median(prefill_ms), "prefill_runs_ms": prefill_ms}
            if args.decode > 0:
                record["decode_tokens"] = args.decode
                record["decode_tok_s"] = args.decode / statistics.median(decode_s)
            if 0 < args.host_hit < n:
                try:
                    with torch.inference_mode():
                        record.update(host_hit(model, torch, transformers, ids, args.host_hit, args.warmup, args.reps,
                                               args.idle_ms))
                except Exception as err:  # noqa: BLE001 - the full prefill's figure stands without it
                    record["host_hit_error"] = f"{type(err).__name__}: {err}"[:500]
            results.append(record)
        except Exception as err:  # noqa: BLE001 - one length failing (e.g. out of memory) must not lose the others
            results.append({"tokens": n, "error": f"{type(err).__name__}: {err}"[:500]})
        finally:
            torch.cuda.empty_cache()

    emit({
        "available": True,
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": "bf16",
        "attention": "sdpa",
        "warmup": args.warmup,
        "reps": args.reps,
        "idle_ms": args.idle_ms,
        "results": results,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
