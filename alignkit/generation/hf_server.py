"""An OpenAI-compatible HTTP server over the HF backend, for machines without vLLM (`alignkit serve --backend hf`).

It implements the subset alignkit's `openai` backend and common clients use: `GET /health`,
`GET /v1/models`, `POST /v1/completions` and `POST /v1/chat/completions` with `n`, `temperature`,
`top_p`, `max_tokens`, `stop`, `seed`, log-probs, and vLLM's `return_tokens_as_token_ids` extension.
No streaming. Requests are served one at a time (one model, one lock); use vLLM for throughput.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alignkit.generation.base import SamplingParams
from alignkit.generation.hf import HFGenerator


class HFServer:
    """Holds the model and answers OpenAI-style requests (transport-independent, so it is testable)."""

    def __init__(self, generator: HFGenerator, model_name: str, api_key: str | None = None) -> None:
        self.chat = generator
        self.raw = HFGenerator(generator.model, generator.tokenizer, template="raw", batch_size=generator.batch_size)
        self.model_name = model_name
        self.api_key = api_key
        self.lock = threading.Lock()

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": int(time.time()),
                                             "owned_by": "alignkit"}]}

    @staticmethod
    def _params(body: dict[str, Any], logprobs: bool) -> SamplingParams:
        stop = body.get("stop") or ()
        temperature = body.get("temperature")
        return SamplingParams(n=int(body.get("n") or 1), temperature=1.0 if temperature is None else float(temperature),
                              top_p=float(body.get("top_p") or 1.0), max_tokens=int(body.get("max_tokens") or 16),
                              stop=(stop,) if isinstance(stop, str) else tuple(stop), seed=body.get("seed"), logprobs=logprobs,
                              min_tokens=int(body.get("min_tokens") or 0))

    def _token(self, token_id: int, as_ids: bool) -> str:
        return f"token_id:{token_id}" if as_ids else self.chat.tokenizer.decode([token_id])

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompts = body.get("prompt")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("'prompt' must be a string or a list of strings")
        want = body.get("logprobs") is not None
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        with self.lock:
            results = self.raw.generate(prompts, self._params(body, want))
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
        with self.lock:
            (result,) = self.chat.generate([messages], self._params(body, want))
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
    """Bind an HTTP server answering with `server` (port 0 picks a free port)."""

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
            if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
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
            routes = {"/v1/completions": server.completions, "/v1/chat/completions": server.chat_completions}
            if self.path not in routes:
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            if not self._authorized():
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                self._send(200, routes[self.path](body))
            except (ValueError, TypeError, KeyError) as exc:
                self._send(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})

    return ThreadingHTTPServer((host, port), Handler)
