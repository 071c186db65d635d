"""The `openai` backend: any OpenAI-compatible endpoint (`alignkit serve`, `vllm serve`, a hosted API).

Requests run concurrently (a bounded thread pool), each with a timeout and retries with exponential
backoff; every retry is logged ("retrying request to URL (attempt 2/3) after …"), and a line every
`progress_every` seconds says how long the endpoint has been answering. Chat prompts (and plain-text prompts under the default `chat` template) go to
`/v1/chat/completions`, so the server applies the model's chat template; under the `alpaca`/`raw`
templates (and `urial`, whose query-marker stop string is added to every request) the prompt is rendered
here and sent to `/v1/completions`; the server's prefix cache (vLLM's) reuses URIAL's static prefix. An endpoint that is down, or dies
mid-request, raises `GenerationError` naming it once the retries are spent, never hangs.

API keys: an explicit `api_key` goes to the endpoint it was given for; `OPENAI_API_KEY` from the
environment goes only to https://api.openai.com. No key is sent over plain http to a host other than
this machine (loopback) unless `allow_plain_http_key=True`.

Token ids come back only from servers that support vLLM's `return_tokens_as_token_ids` extension
(vLLM and `alignkit serve --backend hf`, detected from `/v1/models`); other servers give text and
log-probs with empty `token_ids`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from alignkit.data.records import Prompt
from alignkit.data.templates import as_messages, finish_completion_text, render_prompt, template_stops
from alignkit.generation.base import Completion, GenerationError, GenerationResult, SamplingParams, with_stops

TOKEN_ID_OWNERS = ("vllm", "alignkit")
OPENAI_HOST = "api.openai.com"
NO_KEY = "EMPTY"  # what the SDK sends when there is no key (it requires one); vLLM's convention
log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1): traffic that never leaves this machine."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpoint_api_key(base_url: str, api_key: str | None = None, allow_plain_http_key: bool = False) -> str | None:
    """The key to send to `base_url`: the explicit one, else `OPENAI_API_KEY` for https://api.openai.com only.

    Raises `GenerationError` before anything is sent when a key would travel over plain http to another
    machine without `allow_plain_http_key`.
    """
    url = urllib.parse.urlsplit(base_url)
    host = url.hostname or ""
    if api_key is None and url.scheme == "https" and host == OPENAI_HOST:
        api_key = os.environ.get("OPENAI_API_KEY") or None
    if api_key and url.scheme != "https" and not is_loopback(host) and not allow_plain_http_key:
        raise GenerationError(f"refusing to send an API key over plain http to {base_url}: anyone on the network path "
                              f"can read it. Use https, or pass --allow-plain-http-key (allow_plain_http_key=True) "
                              f"if this network is trusted")
    return api_key


class OpenAIGenerator:
    """Generate through an OpenAI-compatible HTTP endpoint."""

    def __init__(self, base_url: str, model_name: str | None = None, api_key: str | None = None, template: str = "chat",
                 concurrency: int = 8, timeout: float = 120.0, max_retries: int = 2, token_ids: bool | None = None,
                 allow_plain_http_key: bool = False, progress_every: float = 15.0) -> None:
        import openai

        base_url = base_url.rstrip("/")
        self.base_url = base_url if base_url.endswith("/v1") else base_url + "/v1"
        if urllib.parse.urlsplit(self.base_url).scheme not in ("http", "https"):
            raise GenerationError(f"endpoint {base_url!r} is not an http:// or https:// URL")
        if timeout <= 0 or max_retries < 0:
            raise ValueError(f"timeout must be > 0 and retries >= 0, got timeout={timeout}, retries={max_retries}")
        self.template = template
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.progress_every = progress_every
        key = endpoint_api_key(self.base_url, api_key, allow_plain_http_key)
        # Retries are ours (max_retries=0 in the SDK), so each one is visible in the log.
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key or NO_KEY, timeout=timeout, max_retries=0)
        self._model_name = model_name
        self._token_ids = token_ids

    def _models(self) -> list[Any]:
        with self._waiting(lambda: "listing models"):
            return self._call(lambda: list(self.client.models.list()), "/models")

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

    def _call(self, request: Callable[[], Any], route: str = "") -> Any:
        """Run one request, retrying timeouts, dropped connections, 429 and 5xx with exponential backoff."""
        import openai

        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return request()
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:  # APITimeoutError is a connection error
                why = f"timeout ({self.timeout:g} s)" if isinstance(exc, openai.APITimeoutError) else f"connection error ({exc})"
                if attempt == attempts:
                    raise GenerationError(f"OpenAI-compatible endpoint {self.base_url} is unreachable or stopped responding "
                                          f"({why}; gave up after {attempts} attempts: --timeout {self.timeout:g}, "
                                          f"--retries {self.max_retries})") from exc
            except openai.APIStatusError as exc:
                if exc.status_code != 429 and exc.status_code < 500 or attempt == attempts:
                    raise GenerationError(f"endpoint {self.base_url} answered HTTP {exc.status_code}: {exc.message}") from exc
                why = f"HTTP {exc.status_code}"
            delay = min(0.5 * 2 ** (attempt - 1), 8.0)
            log.warning("retrying request to %s%s (attempt %d/%d) after %s, in %.1f s", self.base_url, route, attempt + 1,
                        attempts, why, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _waiting(self, status: Callable[[], str]) -> "_Heartbeat":
        return _Heartbeat(self.base_url, status, self.progress_every)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        """n completions per prompt, `concurrency` requests in flight. Prompt i is sampled under seed + i."""
        name = self.model_name
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="alignkit-openai")
        futures = [pool.submit(self._one, name, p, params, None if params.seed is None else params.seed + i)
                   for i, p in enumerate(prompts)]
        try:
            with self._waiting(lambda: f"{sum(f.done() for f in futures)}/{len(futures)} prompts answered"):
                return [GenerationResult(p, f.result()) for p, f in zip(prompts, futures)]
        finally:  # on the first failure, drop the queued requests instead of letting each fail in turn
            pool.shutdown(wait=True, cancel_futures=True)

    def _one(self, name: str, prompt: Prompt, params: SamplingParams, seed: int | None) -> list[Completion]:
        params = with_stops(params, template_stops(self.template))
        common: dict[str, Any] = {"model": name, "n": params.n, "temperature": params.temperature, "top_p": params.top_p,
                                  "max_tokens": params.max_tokens, "stop": list(params.stop) or None, "seed": seed}
        extra: dict[str, Any] = {"min_tokens": params.min_tokens} if params.min_tokens else {}
        if params.repetition_penalty != 1.0:  # vLLM's extension (and `alignkit serve --backend hf`); not OpenAI's API
            extra["repetition_penalty"] = params.repetition_penalty
        if self._token_ids:
            extra["return_tokens_as_token_ids"] = True
        if extra:
            common["extra_body"] = extra
        if self.template == "chat":
            if params.logprobs:
                common["logprobs"] = True
            response = self._call(lambda: self.client.chat.completions.create(messages=as_messages(prompt), **common),
                                  "/chat/completions")
            return [self._completion(c.message.content or "", c.finish_reason,
                                     [(t.token, t.logprob) for t in c.logprobs.content] if c.logprobs and c.logprobs.content else None)
                    for c in response.choices]
        if params.logprobs:
            common["logprobs"] = 0
        text = render_prompt(prompt, self.template)
        response = self._call(lambda: self.client.completions.create(prompt=text, **common), "/completions")
        return [self._completion(c.text, c.finish_reason,
                                 list(zip(c.logprobs.tokens, c.logprobs.token_logprobs)) if c.logprobs and c.logprobs.tokens else None)
                for c in response.choices]

    def _completion(self, text: str, finish_reason: str | None, tokens: list[tuple[str, float]] | None) -> Completion:
        text = finish_completion_text(self.template, text)  # token ids/log-probs stay as the server sent them
        ids: list[int] = []
        if tokens and self._token_ids:
            ids = [int(tok.split(":", 1)[1]) for tok, _ in tokens if tok.startswith("token_id:")]
        logprobs = [float(lp) for _, lp in tokens] if tokens is not None else None
        return Completion(text, ids, "length" if finish_reason == "length" else "stop", logprobs)


class _Heartbeat:
    """While a block runs, log a line every `every` seconds: the endpoint is slow, not stuck silently."""

    def __init__(self, url: str, status: Callable[[], str], every: float) -> None:
        self.url, self.status, self.every = url, status, every
        self._done = threading.Event()
        self._start = 0.0

    def _beat(self) -> None:
        while not self._done.wait(self.every):
            log.info("waiting for %s: %s after %.0f s", self.url, self.status(), time.monotonic() - self._start)

    def __enter__(self) -> "_Heartbeat":
        self._start = time.monotonic()
        if self.every > 0:
            threading.Thread(target=self._beat, daemon=True, name="alignkit-openai-heartbeat").start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
