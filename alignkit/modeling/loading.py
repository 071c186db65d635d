"""Load the models a recipe names (the policy, and every frozen model: reference, teacher, sampler) with
one loader: dtype, attention, 4/8-bit quantization, LoRA; and fingerprint them for cache keys.

**One placement rule for frozen models** (`load_frozen`, `frozen_placement`): every model that does not train
(the HF generator, LLM judges and critics, reward models, teachers, the precomputed reference) runs on the
process's accelerator (`accelerator_device`: `cuda:<LOCAL_RANK>` under a launcher, the current CUDA device
otherwise, the CPU without CUDA) or on the settings' `device:`, in the settings' dtype, where `auto` means
bfloat16 on a GPU (float16 where bf16 is unsupported) and float32 on the CPU. A live reference (route `model`)
is placed by accelerate with the policy (sharded under ZeRO-3) and takes only the dtype rule.

`model_fingerprint` is content-addressed: it hashes every byte of every weight file (sha256, about
1 s/GB here; the digest of a file is remembered under its size, mtime, ctime and inode, so a second run
re-reads nothing) plus the config, tokenizer files and every load setting that changes the numbers
(dtype, quantization, attention implementation). A model changed in place, a quantised and an
unquantised copy, or a different revision never share a cache entry; the same weights under another
path do.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.cache import cache_dir, write_text_atomic
from alignkit.config import TINY_MODEL_PREFIX, ModelSettings


class ModelLoadError(AlignkitError, OSError):
    """A model or tokenizer could not be loaded; the message names the path and the first line of the cause."""


def _load_failure(what: str, path: str, err: OSError) -> ModelLoadError:
    cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelLoadError(f"model {path!r}: could not load the {what}: {cause} "
                          f"(is it a local model folder, or a hub id that is reachable or cached?)")


def resolve_model_path(path: str) -> str:
    """A loadable path: `tiny:<size>` is built into the local cache on first use."""
    if path.startswith(TINY_MODEL_PREFIX):
        from alignkit.gym.tiny_model import resolve_tiny

        return str(resolve_tiny(path))
    return path


def torch_dtype(name: str) -> Any:
    """The torch dtype for a recipe dtype name ('auto' passes through)."""
    import torch

    return name if name == "auto" else getattr(torch, name)


def accelerator_device() -> Any:
    """The process's accelerator: `cuda:<LOCAL_RANK>` in a launched process, the current CUDA device otherwise,
    or the CPU when there is no CUDA."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = os.environ.get("LOCAL_RANK")
    index = int(local) % torch.cuda.device_count() if local is not None else torch.cuda.current_device()
    return torch.device("cuda", index)


def frozen_placement(settings: ModelSettings) -> tuple[Any, str]:
    """(device, dtype name) of a frozen model: `settings.device` or the process's accelerator, and `settings.dtype`
    where `auto` is bfloat16 on an accelerator (float16 on a CUDA GPU without bf16) and float32 on the CPU."""
    import torch

    device = torch.device(settings.device) if settings.device else accelerator_device()
    dtype = settings.dtype
    if dtype == "auto":
        if device.type == "cpu":
            dtype = "float32"
        else:
            dtype = "float16" if device.type == "cuda" and not torch.cuda.is_bf16_supported() else "bfloat16"
    return device, dtype


def placed_settings(settings: ModelSettings) -> ModelSettings:
    """The settings a frozen model is loaded with: the placement rule's dtype in place of `auto`, no LoRA."""
    _, dtype = frozen_placement(settings)
    return settings.model_copy(update={"dtype": dtype, "lora": None})


def load_frozen(settings: ModelSettings, kind: str = "causal_lm", labels: int | None = 1) -> Any:
    """A frozen (eval, no-grad) model placed by the one rule (see the module docstring): on `settings.device` or
    the process's accelerator, in the settings' dtype (`auto`: bf16 on a GPU, fp32 on the CPU)."""
    device, _ = frozen_placement(settings)
    return load_causal_lm(placed_settings(settings), trainable=False, kind=kind, device=device, labels=labels)


def load_tokenizer(settings: ModelSettings) -> Any:
    """The tokenizer, with a pad token (EOS when the model has none) and right padding."""
    from transformers import AutoTokenizer

    path = resolve_model_path(settings.tokenizer or settings.path)
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=settings.revision, trust_remote_code=settings.trust_remote_code)
    except OSError as err:
        raise _load_failure("tokenizer", settings.tokenizer or settings.path, err) from None
    if settings.chat_template:
        tok.chat_template = chat_template_text(settings.chat_template)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def chat_template_text(value: str) -> str:
    """A `chat_template` setting's Jinja text: the file's contents for a path ending in .jinja, else the value itself."""
    if value.endswith(".jinja"):
        try:
            return Path(value).read_text(encoding="utf-8")
        except OSError as err:
            raise ValueError(f"model.chat_template: cannot read {value}: {err}") from None
    return value


MODEL_KINDS = ("causal_lm", "sequence_classifier")


def load_causal_lm(settings: ModelSettings, trainable: bool = True, gradient_checkpointing: bool = False,
                   kind: str = "causal_lm", device: Any = None, labels: int | None = 1) -> Any:
    """The model with quantization and (when `trainable`) a fresh LoRA adapter from the settings.

    `kind="sequence_classifier"` loads a sequence classifier (a reward model): with `labels=1` a one-output one
    with the tokenizer's pad id in its config (from a causal LM checkpoint the score head starts fresh), with
    `labels=None` the checkpoint's own head and config (a multi-output or remote-code reward model). `device` places the
    weights (a quantized model is loaded straight onto it); frozen models come through `load_frozen`."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    path = resolve_model_path(settings.path)
    kwargs: dict[str, Any] = {"revision": settings.revision, "trust_remote_code": settings.trust_remote_code}
    kwargs["dtype"] = torch_dtype(settings.dtype)
    if settings.attn_implementation:
        kwargs["attn_implementation"] = settings.attn_implementation
    if settings.quantization:
        from transformers import BitsAndBytesConfig

        q = settings.quantization
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if q.bits == 8
            else BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
                bnb_4bit_compute_dtype=torch_dtype(q.compute_dtype),
            )
        )
    if device is not None and (settings.quantization or device.type == "cuda"):
        kwargs["device_map"] = {"": device}  # straight onto the GPU (bitsandbytes weights cannot be moved later)
    try:
        if kind == "sequence_classifier":
            # a fresh one-label head takes the tokenizer's pad id; a checkpoint's own head keeps its config's
            head = {"num_labels": labels, "pad_token_id": load_tokenizer(settings).pad_token_id} if labels is not None else {}
            model = AutoModelForSequenceClassification.from_pretrained(path, **head, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise _load_failure("model", settings.path, err) from None
    if device is not None and "device_map" not in kwargs:
        model = model.to(device)
    if not trainable:
        model.eval().requires_grad_(False)
        return model
    if settings.quantization:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if gradient_checkpointing:
        # Non-reentrant checkpointing (PyTorch's recommendation, TRL's default) except for a LoRA policy under ZeRO-3,
        # which needs the reentrant form (huggingface/trl#2514).
        from transformers.integrations import is_deepspeed_zero3_enabled

        reentrant = bool(settings.lora) and is_deepspeed_zero3_enabled()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
        model.config.use_cache = False
    if settings.lora:
        from peft import LoraConfig, get_peft_model

        lora = settings.lora
        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
            bias=lora.bias, task_type="SEQ_CLS" if kind == "sequence_classifier" else "CAUSAL_LM",
        )
        # autocast_adapter_dtype=False: DeepSpeed >= 0.19.2 fails on mixed-dtype all-gathers otherwise.
        model = get_peft_model(model, config, autocast_adapter_dtype=False)
    return model


def frozen_settings(settings: ModelSettings, path: str | None = None) -> ModelSettings:
    """Settings for a frozen model (reference, teacher, sampler): the recipe's load settings (dtype,
    attention, quantization, trust_remote_code) without LoRA, for `path` when given (another model) or the
    policy's own initial weights (then its revision and tokenizer too)."""
    update: dict[str, Any] = {"lora": None}
    if path and path != settings.path:
        update.update(path=path, revision=None, tokenizer=None)
    return settings.model_copy(update=update)


# Files that hold what a model computes; training state in a checkpoint folder (optimizer, scheduler, RNG,
# trainer state, arguments) does not change the numbers and can be gigabytes, so it is not hashed.
_FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".jinja", ".model", ".txt", ".py", ".tiktoken")
_TRAINING_STATE = ("optimizer", "scheduler", "rng_state", "training_args", "trainer_state", "scaler")


def _weights_files(folder: Path) -> list[Path]:
    files = []
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder)
        if not file.is_file() or any(part.startswith(".") for part in rel.parts) or file.suffix not in _FINGERPRINT_SUFFIXES:
            continue
        if file.name.startswith(_TRAINING_STATE) or rel.parts[0].startswith("global_step"):
            continue
        files.append(file)
    return files


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, remembered under (path, size, mtime, ctime, inode) so it is read once.

    ctime cannot be set by a user, so a file rewritten in place (same size, mtime restored) still changes
    its key and is hashed again."""
    path = Path(path).resolve()
    st = path.stat()
    memo_key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}".encode()).hexdigest()[:32]
    memo = cache_dir() / "digests" / memo_key
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    write_text_atomic(memo, digest)
    return digest


def _hub_identity(settings: ModelSettings) -> str:
    """A hub model's identity: its files' digests when a snapshot is on disk, else the revision's commit."""
    from huggingface_hub import HfApi, snapshot_download

    try:
        folder = Path(snapshot_download(settings.path, revision=settings.revision, local_files_only=True))
    except Exception:  # not downloaded yet: the commit the revision resolves to is an exact identity
        try:
            sha = HfApi().model_info(settings.path, revision=settings.revision).sha
        except Exception as err:
            raise OSError(f"model.path {settings.path!r}: not a local folder and not reachable on the hub ({err})") from None
        return f"hub:{settings.path}@{sha}"
    return _folder_identity(folder)


def _folder_identity(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in _weights_files(folder):
        if file.name == "config.json":  # key order and whitespace do not change the model
            digest.update(b"config.json|" + json.dumps(json.loads(file.read_text()), sort_keys=True).encode())
        else:
            digest.update(f"{file.relative_to(folder).as_posix()}|{file_digest(file)}|".encode())
    return digest.hexdigest()


def model_fingerprint(settings: ModelSettings) -> str:
    """Identity of what a model computes under these load settings, for cache keys (see the module docstring)."""
    path = resolve_model_path(settings.path)
    folder = Path(path).expanduser()
    identity = _folder_identity(folder) if folder.is_dir() else _hub_identity(settings)
    tokenizer = settings.tokenizer
    if tokenizer and Path(resolve_model_path(tokenizer)).is_dir():
        tokenizer = _folder_identity(Path(resolve_model_path(tokenizer)))
    load = {"dtype": settings.dtype, "attn": settings.attn_implementation, "tokenizer": tokenizer,
            "quantization": settings.quantization.model_dump() if settings.quantization else None}
    if settings.chat_template:  # another template renders other token ids (only when set: existing keys stay valid)
        load["chat_template"] = hashlib.sha256(chat_template_text(settings.chat_template).encode()).hexdigest()
    return hashlib.sha256(json.dumps([identity, load], sort_keys=True).encode()).hexdigest()


def check_same_tokenizer(student: Any, other: ModelSettings, role: str = "teacher") -> None:
    """Raise ValueError unless `other`'s tokenizer maps every token to the same id as `student` (a tokenizer):
    per-token signals of one model index the other's vocabulary directly (distillation)."""
    theirs = load_tokenizer(other)
    mine_vocab, their_vocab = student.get_vocab(), theirs.get_vocab()
    if mine_vocab != their_vocab:
        diff = sorted(set(mine_vocab.items()) ^ set(their_vocab.items()))[:3]
        raise ValueError(f"the {role} {other.path!r} has a different tokenizer from the student ({len(their_vocab)} vs "
                         f"{len(mine_vocab)} tokens; e.g. {diff}); per-token distillation needs a shared vocabulary "
                         "(ADPA spec P1). Use a teacher from the student's model family.")
