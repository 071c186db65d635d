"""An OpenAI-compatible HTTP server over the HF backend, for machines without vLLM (`alignkit serve --backend hf`).

It implements the subset alignkit's `openai` backend and common clients use: `GET /health`,
`GET /v1/models`, `POST /v1/completions` and `POST /v1/chat/completions` with `n`, `temperature`,
`top_p`, `max_tokens`, `stop`, `seed`, vLLM's `repetition_penalty`, log-probs, and vLLM's `return_tokens_as_token_ids` extension.
No streaming. Requests are served one at a time (one model, one lock); use vLLM for throughput.

Requests are validated before any generation, with vLLM's status codes: a body that is not a JSON
object, `n`/`max_tokens` below 1, a prompt plus `max_tokens` beyond the model's context, or
`stream: true` is a 400; a `model` other than the served name is a 404; a wrong API key is a 401
(compared in constant time). `cancel()` stops a generation in progress (shutdown), answering 503.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from alignkit.generation.base import GenerationError, SamplingParams
from alignkit.generation.hf import HFGenerator


class RequestError(ValueError):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


def _count(body: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RequestError(400, f"'{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def bearer_authorized(header: str | None, api_key: str | None) -> bool:
    """True when no key is required or `header` is `Bearer <api_key>`, compared in constant time."""
    if not api_key:
        return True
    return hmac.compare_digest((header or "").encode(), f"Bearer {api_key}".encode())


class ServedApp:
    """What `make_http_server` and `serve.serve_app` need from an app besides its routes: the bearer-key check,
    and a clean shutdown (refuse new requests, stop a generation in progress, wait for running ones)."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()  # one model: one request at a time
        self.cancelled = threading.Event()  # set by cancel(); generators given it stop mid-generation
        self._busy = 0
        self._idle = threading.Condition()

    def authorized(self, header: str | None) -> bool:
        """True when no key is required or `header` is `Bearer <key>` (constant-time comparison)."""
        return bearer_authorized(header, self.api_key)

    def cancel(self) -> None:
        """Stop the generation in progress and refuse new ones (server shutdown)."""
        self.cancelled.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being answered; False if `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Count a request as running; 503 once the server is shutting down, and for a cancelled generation."""
        if self.cancelled.is_set():
            raise RequestError(503, "the server is shutting down", "service_unavailable")
        with self._idle:
            self._busy += 1
        try:
            yield
        except GenerationError as exc:
            raise RequestError(503, str(exc), "service_unavailable") from None
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()


class HFServer(ServedApp):
    """Holds the model and answers OpenAI-style requests (transport-independent, so it is testable)."""

    post_routes = {"/v1/completions": "completions", "/v1/chat/completions": "chat"}  # path -> route given to handle()

    def __init__(self, generator: HFGenerator, model_name: str, api_key: str | None = None) -> None:
        super().__init__(api_key)
        self.chat = generator
        self.raw = HFGenerator(generator.model, generator.tokenizer, template="raw", batch_size=generator.batch_size)
        self.model_name = model_name
        self.chat.cancel_event = self.raw.cancel_event = self.cancelled
        config = generator.model.config
        self.context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)

    def handle(self, route: str, body: Any) -> dict[str, Any]:
        """Validate a request body and answer it (raises `RequestError` with the status to send)."""
        if not isinstance(body, dict):
            raise RequestError(400, f"the request body must be a JSON object, got {type(body).__name__}")
        if body.get("stream"):
            raise RequestError(400, "streaming is not supported by alignkit serve --backend hf; send stream: false")
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise RequestError(404, f"The model `{model}` does not exist.", "NotFoundError")
        with self.answering():
            return self.completions(body) if route == "completions" else self.chat_completions(body)

    def _check_length(self, generator: HFGenerator, prompts: list[Any], max_tokens: int) -> None:
        if not self.context:
            return
        longest = max(len(generator.encode(p)) for p in prompts)
        if longest + max_tokens > self.context:
            raise RequestError(400, f"This model's maximum context length is {self.context} tokens. However, you requested "
                                    f"{longest + max_tokens} tokens ({longest} in the prompt, {max_tokens} in the completion). "
                                    f"Please reduce the length of the prompt or max_tokens.")

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": int(time.time()),
                                             "owned_by": "alignkit"}]}

    @staticmethod
    def _params(body: dict[str, Any], logprobs: bool) -> SamplingParams:
        stop = body.get("stop") or ()
        temperature = body.get("temperature")
        top_p = body.get("top_p")
        return SamplingParams(n=_count(body, "n", 1, 1), temperature=1.0 if temperature is None else float(temperature),
                              top_p=1.0 if top_p is None else float(top_p), max_tokens=_count(body, "max_tokens", 16, 1),
                              stop=(stop,) if isinstance(stop, str) else tuple(stop), seed=body.get("seed"), logprobs=logprobs,
                              min_tokens=_count(body, "min_tokens", 0, 0),
                              repetition_penalty=float(body.get("repetition_penalty") or 1.0))

    def _token(self, token_id: int, as_ids: bool) -> str:
        return f"token_id:{token_id}" if as_ids else self.chat.tokenizer.decode([token_id])

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompts = body.get("prompt")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("'prompt' must be a string or a list of strings")
        want = body.get("logprobs") is not None
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        params = self._params(body, want)
        with self.lock:
            self._check_length(self.raw, prompts, params.max_tokens)
            results = self.raw.generate(prompts, params)
        choices, used = [], 0
        for result in results:
            for c in result.completions:
                lp = None
                if want:
                    lp = {"tokens": [self._token(t, as_ids) for t in c.token_ids], "token_logprobs": c.logprobs,
                          "top_logprobs": None, "text_offset": None}
                choices.append({"index": len(choices), "text": c.text, "finish_reason": c.finish_reason, "logprobs": lp})
                used += len(c.token_ids)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.model_name, "choices": choices, "usage": {"completion_tokens": used}}

    def chat_completions(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        want = bool(body.get("logprobs"))
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        params = self._params(body, want)
        with self.lock:
            self._check_length(self.chat, [messages], params.max_tokens)
            (result,) = self.chat.generate([messages], params)
        choices, used = [], 0
        for c in result.completions:
            lp = None
            if want:
                lp = {"content": [{"token": self._token(t, as_ids), "logprob": v, "bytes": None, "top_logprobs": []}
                                  for t, v in zip(c.token_ids, c.logprobs or [])]}
            choices.append({"index": len(choices), "message": {"role": "assistant", "content": c.text},
                            "finish_reason": c.finish_reason, "logprobs": lp})
            used += len(c.token_ids)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model_name, "choices": choices, "usage": {"completion_tokens": used}}


def make_http_server(server: HFServer, host: str, port: int) -> ThreadingHTTPServer:
    """Bind an HTTP server answering with `server` (port 0 picks a free port).

    `server` is an `HFServer` or another `ServedApp` with `models()`, `post_routes` (path -> route) and
    `handle(route, body)` raising `RequestError` (the judge server is one).
    """

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per request is noise here
            return

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if not server.authorized(self.headers.get("Authorization")):
                self._send(401, {"error": {"message": "invalid or missing API key", "type": "authentication_error"}})
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/health":
                self._send(200, {"status": "ok"})
            elif self.path == "/v1/models":
                if self._authorized():
                    self._send(200, server.models())
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            routes = server.post_routes
            if self.path not in routes:
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            if not self._authorized():
                return
            try:
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                except (ValueError, UnicodeDecodeError) as exc:
                    raise RequestError(400, f"the request body is not valid JSON: {exc}") from None
                self._send(200, server.handle(routes[self.path], body))
            except RequestError as exc:
                self._send(exc.status, {"error": {"message": str(exc), "type": exc.kind, "code": exc.status}})
            except (ValueError, TypeError, KeyError) as exc:
                self._send(400, {"error": {"message": str(exc), "type": "invalid_request_error", "code": 400}})
            except Exception as exc:  # answer instead of dropping the connection
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "internal_error", "code": 500}})

    return ThreadingHTTPServer((host, port), Handler)
