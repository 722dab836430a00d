"""Writes the trained model in Hugging Face format: config.json, fp16 model.safetensors, generation_config.json."""

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def llama_config(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, ffn: int,
                 max_positions: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
        max_position_embeddings=max_positions, rope_theta=10000.0, rms_norm_eps=1e-5, hidden_act='silu',
        attention_bias=False, mlp_bias=False, tie_word_embeddings=True, bos_token_id=0, eos_token_id=1,
        pad_token_id=1, initializer_range=0.02,
    )


def save_model(model: LlamaForCausalLM, out: Path) -> None:
    """fp16 safetensors, and a config.json that also spells the fields older readers look for."""
    half = LlamaForCausalLM(model.config)
    half.load_state_dict({k: v.detach().to('cpu') for k, v in model.state_dict().items()})
    half = half.to(torch.float16)
    half.config.torch_dtype = torch.float16
    half.save_pretrained(str(out), safe_serialization=True)
    path = out / 'config.json'
    config = json.loads(path.read_text())
    # transformers 5 writes `dtype` and nests rope_theta in rope_parameters; keep both spellings.
    config['torch_dtype'] = 'float16'
    config['dtype'] = 'float16'
    config['rope_theta'] = 10000.0
    config['architectures'] = ['LlamaForCausalLM']
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + '\n')
    generation = {'bos_token_id': 0, 'eos_token_id': 1, 'pad_token_id': 1, 'do_sample': True,
                  'temperature': 0.8, 'top_k': 40, 'max_new_tokens': 128}
    (out / 'generation_config.json').write_text(json.dumps(generation, indent=2) + '\n')
