"""Tiny local models: a byte-level BPE tokenizer trained on bundled text, plus small random Llamas.

Nothing here touches the Hugging Face Hub. `build_tiny_model(out, size)` writes a folder that
`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` load offline. Recipes can
name `tiny:<size>` as their model; it is built once into the local cache and reused.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from alignkit.cache import cache_dir
from alignkit.gym.shapes import SIZES, TinySize  # noqa: F401  (re-exported)

CORPUS = Path(__file__).with_name("tokenizer_corpus.txt")
FACTORY_VERSION = "1"  # bump when the factory's output changes, so cached models are rebuilt
SPECIAL_TOKENS = ["<pad>", "<s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(vocab_size: int = 1024):
    """Train a byte-level BPE tokenizer on the bundled corpus; returns a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(CORPUS)], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>",
        additional_special_tokens=SPECIAL_TOKENS[3:], model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out: str | Path, size: str = "xs", seed: int = 0, classifier: bool = False) -> Path:
    """Write tokenizer + random Llama (causal LM, or 1-label sequence classifier) to `out`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    if size not in SIZES:
        raise ValueError(f"unknown tiny model size {size!r}; known: {', '.join(SIZES)}")
    shape = SIZES[size]
    tokenizer = train_tokenizer(shape.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_attention_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=size != "100m",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
    )
    torch.manual_seed(seed)
    model = (LlamaForSequenceClassification if classifier else LlamaForCausalLM)(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    if not classifier:
        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
        ).save_pretrained(out)
    return out


def resolve_tiny(spec: str, seed: int = 0) -> Path:
    """Build `tiny:<size>` once into the cache (atomically) and return its folder."""
    size = spec.split(":", 1)[1]
    recipe = f"{FACTORY_VERSION}|{size}|{seed}|{asdict(SIZES[size])}".encode()
    key = hashlib.sha256(recipe + CORPUS.read_bytes()).hexdigest()[:12]
    target = cache_dir() / "models" / f"tiny-{size}-seed{seed}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build_tiny_model(tmp, size, seed)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists() and tmp != target:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
