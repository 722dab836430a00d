#!/usr/bin/env python3
"""Compare the KDN engine with Hugging Face transformers, the reference people trust.

For each supported architecture: transformers builds a random-weight model from a small config and saves it
(safetensors); the engine loads the same directory through `tools/engine-logits.ts`; both run the same prompt.
We compare last-position logits (max abs difference, relative to the logit range) and require identical greedy
tokens for 32 steps. Runs where python3 has torch and transformers, on a GPU or the CPU; prints one JSON report.

  python3 tools/gpu/compare-transformers.py --backend webgpu --out report.json
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import transformers

ARCHS = {
    "LlamaForCausalLM": dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                             tie_word_embeddings=True),
    "MistralForCausalLM": dict(sliding_window=4096, tie_word_embeddings=False),
    "Qwen2ForCausalLM": dict(tie_word_embeddings=True),
    "Qwen3ForCausalLM": dict(tie_word_embeddings=False, head_dim=64),
}
CONFIG_CLASS = {
    "LlamaForCausalLM": "LlamaConfig",
    "MistralForCausalLM": "MistralConfig",
    "Qwen2ForCausalLM": "Qwen2Config",
    "Qwen3ForCausalLM": "Qwen3Config",
}
TOLERANCE = 2e-3  # max |engine - transformers| over last-position logits, relative to the logit range


def build(arch: str, directory: str, vocab: int, dtype: torch.dtype) -> None:
    cfg_cls = getattr(transformers, CONFIG_CLASS[arch])
    cfg = cfg_cls(vocab_size=vocab, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096,
                  rms_norm_eps=1e-5, rope_theta=10000.0, initializer_range=0.08, **ARCHS[arch])
    cfg.architectures = [arch]
    torch.manual_seed(1234)
    model = getattr(transformers, arch)(cfg).to(dtype).eval()
    if arch == "Qwen2ForCausalLM":
        with torch.no_grad():  # random biases, so their loading is exercised
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.05)
    model.save_pretrained(directory, safe_serialization=True)


def hf_run(directory: str, prompt: list, steps: int, device: str):
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32,
                                                              attn_implementation="eager").to(device).eval()
    ids = torch.tensor([prompt], device=device)
    with torch.no_grad():
        last = model(ids).logits[0, -1].float().cpu()
        out = model.generate(ids, max_new_tokens=steps, do_sample=False, min_new_tokens=steps,
                             pad_token_id=0, eos_token_id=None)
    greedy = out[0, len(prompt):].tolist()
    top2 = torch.topk(last, 2).values
    return last, greedy, float(top2[0] - top2[1])


def engine_run(directory: str, prompt: list, steps: int, backend: str):
    cmd = ["node", "--import", "tsx", "tools/engine-logits.ts", "--model", directory, "--backend", backend,
           "--tokens", ",".join(map(str, prompt)), "--steps", str(steps)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"engine failed: {res.stderr[-2000:]}")
    data = json.loads(res.stdout.strip().splitlines()[-1])
    return torch.tensor(data["lastLogits"]), data["greedy"], data.get("device", "?")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="webgpu")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--out", default="")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = tempfile.mkdtemp(prefix="kdn-compare-")
    tok_dir = os.path.join(work, "tokenizer")
    subprocess.run(["node", "--import", "tsx", "tools/make-tiny-models.ts", tok_dir, "--arch", "LlamaForCausalLM"],
                   check=True, capture_output=True)
    tok_model = os.path.join(tok_dir, "LlamaForCausalLM") if os.path.isdir(os.path.join(tok_dir, "LlamaForCausalLM")) else tok_dir
    vocab = json.load(open(os.path.join(tok_model, "config.json")))["vocab_size"]
    prompt = [int(x) for x in torch.randint(5, vocab, (48,), generator=torch.Generator().manual_seed(7))]
    results = []
    for arch in ARCHS:
        d = os.path.join(work, arch)
        build(arch, d, vocab, getattr(torch, args.dtype))
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(tok_model, f), d)
        ref_logits, ref_greedy, margin = hf_run(d, prompt, args.steps, device)
        eng_logits, eng_greedy, eng_device = engine_run(d, prompt, args.steps, args.backend)
        span = float(ref_logits.max() - ref_logits.min())
        max_abs = float((eng_logits - ref_logits).abs().max())
        same = eng_greedy == ref_greedy
        first_diff = next((i for i, (a, b) in enumerate(zip(eng_greedy, ref_greedy)) if a != b), None)
        rec = dict(architecture=arch, weights_dtype=args.dtype, backend=args.backend, engine_device=eng_device,
                   prompt_tokens=len(prompt), steps=args.steps, logits_max_abs_diff=max_abs, logits_range=span,
                   relative_diff=max_abs / span, tolerance=TOLERANCE, top1_margin=margin,
                   greedy_identical=same, first_greedy_divergence=first_diff,
                   passed=same and max_abs / span <= TOLERANCE)
        print(json.dumps(rec), flush=True)
        results.append(rec)
    report = dict(transformers=transformers.__version__, torch=torch.__version__, device=device,
                  gpu=torch.cuda.get_device_name(0) if device == "cuda" else None, results=results,
                  all_passed=all(r["passed"] for r in results))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)
    print(json.dumps({"all_passed": report["all_passed"]}))
    return 0 if report["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
