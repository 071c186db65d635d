"""The `openai` backend: any OpenAI-compatible endpoint (`alignkit serve`, `vllm serve`, a hosted API).

Requests run concurrently (a bounded thread pool), each with the SDK's timeout and retries with
exponential backoff. Chat prompts (and plain-text prompts under the default `chat` template) go to
`/v1/chat/completions`, so the server applies the model's chat template; under the `alpaca`/`raw`
templates the prompt is rendered here and sent to `/v1/completions`. An endpoint that is down, or dies
mid-request, raises `GenerationError` naming it once the retries are spent, never hangs.

Token ids come back only from servers that support vLLM's `return_tokens_as_token_ids` extension
(vLLM and `alignkit serve --backend hf`, detected from `/v1/models`); other servers give text and
log-probs with empty `token_ids`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from alignkit.data.records import Prompt
from alignkit.data.templates import as_messages, render_prompt
from alignkit.generation.base import Completion, GenerationError, GenerationResult, SamplingParams

TOKEN_ID_OWNERS = ("vllm", "alignkit")


class OpenAIGenerator:
    """Generate through an OpenAI-compatible HTTP endpoint."""

    def __init__(self, base_url: str, model_name: str | None = None, api_key: str | None = None, template: str = "chat",
                 concurrency: int = 8, timeout: float = 120.0, max_retries: int = 3, token_ids: bool | None = None) -> None:
        import openai

        base_url = base_url.rstrip("/")
        self.base_url = base_url if base_url.endswith("/v1") else base_url + "/v1"
        self.template = template
        self.concurrency = concurrency
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "EMPTY"),
                                    timeout=timeout, max_retries=max_retries)
        self.max_retries = max_retries
        self._model_name = model_name
        self._token_ids = token_ids

    def _models(self) -> list[Any]:
        return self._call(lambda: list(self.client.models.list()))

    @property
    def model_name(self) -> str:
        """The served model's name (the first in `/v1/models` unless given)."""
        if self._model_name is None:
            models = self._models()
            if not models:
                raise GenerationError(f"{self.base_url} serves no models")
            self._model_name = models[0].id
            if self._token_ids is None:
                self._token_ids = (getattr(models[0], "owned_by", "") or "").lower() in TOKEN_ID_OWNERS
        return self._model_name

    def _call(self, request: Any) -> Any:
        import openai

        try:
            return request()
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise GenerationError(f"OpenAI-compatible endpoint {self.base_url} is unreachable or stopped responding "
                                  f"({type(exc).__name__} after {self.max_retries} retries): {exc}") from exc
        except openai.APIStatusError as exc:
            raise GenerationError(f"endpoint {self.base_url} answered HTTP {exc.status_code}: {exc.message}") from exc

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        """n completions per prompt, `concurrency` requests in flight. Prompt i is sampled under seed + i."""
        name = self.model_name
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="alignkit-openai")
        futures = [pool.submit(self._one, name, p, params, None if params.seed is None else params.seed + i)
                   for i, p in enumerate(prompts)]
        try:
            return [GenerationResult(p, f.result()) for p, f in zip(prompts, futures)]
        finally:  # on the first failure, drop the queued requests instead of letting each fail in turn
            pool.shutdown(wait=True, cancel_futures=True)

    def _one(self, name: str, prompt: Prompt, params: SamplingParams, seed: int | None) -> list[Completion]:
        common: dict[str, Any] = {"model": name, "n": params.n, "temperature": params.temperature, "top_p": params.top_p,
                                  "max_tokens": params.max_tokens, "stop": list(params.stop) or None, "seed": seed}
        extra: dict[str, Any] = {"min_tokens": params.min_tokens} if params.min_tokens else {}
        if self._token_ids:
            extra["return_tokens_as_token_ids"] = True
        if extra:
            common["extra_body"] = extra
        if self.template == "chat":
            if params.logprobs:
                common["logprobs"] = True
            response = self._call(lambda: self.client.chat.completions.create(messages=as_messages(prompt), **common))
            return [self._completion(c.message.content or "", c.finish_reason,
                                     [(t.token, t.logprob) for t in c.logprobs.content] if c.logprobs and c.logprobs.content else None)
                    for c in response.choices]
        if params.logprobs:
            common["logprobs"] = 0
        text = render_prompt(prompt, self.template)
        response = self._call(lambda: self.client.completions.create(prompt=text, **common))
        return [self._completion(c.text, c.finish_reason,
                                 list(zip(c.logprobs.tokens, c.logprobs.token_logprobs)) if c.logprobs and c.logprobs.tokens else None)
                for c in response.choices]

    def _completion(self, text: str, finish_reason: str | None, tokens: list[tuple[str, float]] | None) -> Completion:
        ids: list[int] = []
        if tokens and self._token_ids:
            ids = [int(tok.split(":", 1)[1]) for tok, _ in tokens if tok.startswith("token_id:")]
        logprobs = [float(lp) for _, lp in tokens] if tokens is not None else None
        return Completion(text, ids, "length" if finish_reason == "length" else "stop", logprobs)
