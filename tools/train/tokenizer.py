"""The demo model's byte-level BPE tokenizer, its chat template, and its Hugging Face tokenizer files."""

import json
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOS, EOS, SYSTEM, USER, ASSISTANT = '<|begin_of_text|>', '<|end_of_text|>', '<|system|>', '<|user|>', '<|assistant|>'
SPECIAL_TOKENS = [BOS, EOS, SYSTEM, USER, ASSISTANT]  # ids 0..4, in this order

# '<|begin_of_text|><|user|>\n{question}\n<|assistant|>\n{answer}<|end_of_text|>' - chat_prompt() below
# renders the same string, and train.py trains on it.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('roles are system, user and assistant') -}}"
    "{%- endif -%}"
    "{{- '<|' + message['role'] + '|>\\n' + (message['content'] | trim) -}}"
    "{%- if message['role'] == 'assistant' -%}{{- eos_token -}}{%- else -%}{{- '\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)


def chat_prompt(question: str) -> str:
    """The template's rendering of one user turn with the generation prompt, without the BOS token."""
    return f'{USER}\n{question.strip()}\n{ASSISTANT}\n'


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # Like Llama 3: encoding with special tokens on prepends BOS (and never appends EOS).
    tok.post_processor = processors.TemplateProcessing(single=f'{BOS} $A', pair=f'{BOS} $A {BOS} $B',
                                                       special_tokens=[(BOS, tok.token_to_id(BOS))])
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise RuntimeError(f'special token {t} got id {tok.token_to_id(t)}, expected {i}')
    return tok


def save_tokenizer(tok: Tokenizer, out: Path, model_max_length: int) -> None:
    tok.save(str(out / 'tokenizer.json'))
    config = {
        'tokenizer_class': 'PreTrainedTokenizerFast',
        'bos_token': BOS,
        'eos_token': EOS,
        'pad_token': EOS,
        'unk_token': None,
        'add_bos_token': True,
        'add_eos_token': False,
        'clean_up_tokenization_spaces': False,
        'model_max_length': model_max_length,
        'added_tokens_decoder': {
            str(i): {'content': t, 'lstrip': False, 'rstrip': False, 'normalized': False,
                     'single_word': False, 'special': True}
            for i, t in enumerate(SPECIAL_TOKENS)
        },
        'chat_template': CHAT_TEMPLATE,
    }
    (out / 'tokenizer_config.json').write_text(json.dumps(config, indent=2) + '\n', encoding='utf-8')
