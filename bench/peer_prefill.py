#!/usr/bin/env python3
"""The peer a user would otherwise run: Hugging Face transformers (bf16, sdpa) on the same random-weight model shape.

Times full prefill of N tokens with logits_to_keep=1 up to the first greedy token (median of --reps after --warmup
runs), and with --decode K the greedy decode of K tokens after that prefill. Prints one JSON object on stdout:
  {"available": true, "device": ..., "torch": ..., "transformers": ..., "results": [{"tokens": N, "prefill_ms": ...,
   "decode_tok_s": ...} | {"tokens": N, "error": "..."}]}
or {"available": false, "reason": "..."} where torch or a CUDA device is missing (exit status 0 either way).

  python3 bench/peer_prefill.py --config-json '{...config.json...}' --tokens 1024,4096 [--decode 32]
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config-json", required=True, help="the model's config.json as a JSON string")
    ap.add_argument("--tokens", required=True, help="comma-separated prefill lengths")
    ap.add_argument("--decode", type=int, default=0, help="greedy decode steps to time after each prefill")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=0, help="stop starting new lengths after this long")
    ap.add_argument("--seed", type=int, default=1)
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
        "results": results,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
