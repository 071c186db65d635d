"""One judge for many machines: `alignkit judge-serve` answers judging requests over HTTP, `RemoteJudge` asks it.

    alignkit judge-serve --judge llm --model data/gym/judge-s --port 8100            # loopback only
    alignkit judge-serve --judge llm --model data/gym/judge-s --host 0.0.0.0 --api-key $KEY

    from alignkit.judge import RemoteJudge
    judge = RemoteJudge("http://judge-host:8100", api_key=KEY)   # the same `judge(items)` as a local judge
    verdicts = judge.judge(items)                                   # Verdict(value, status, raw, detail)

Routes: `GET /health`; `GET /v1/models` (the judge's name and report kind); `POST /v1/judge` with a JSON
list of judge items (`question`, `answer`, `reference`, ... as in the judge data format) or
`{"items": [...]}`, answered with `{"judge", "kind", "n", "unparsed", "verdicts": [{"value", "status",
"raw", "detail"}]}`. A bad item is a 400 naming its index and field. Served like `alignkit serve --backend
hf` (`alignkit.generation.serve.serve_app`): loopback by default, a non-loopback bind needs an API key
(or `--allow-unauthenticated`), the key is checked in constant time, one request is judged at a time (the
judge's own batching and cache apply), and SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

from alignkit.data.records import JudgeItem
from alignkit.generation.base import GenerationError
from alignkit.generation.hf_server import RequestError, ServedApp
from alignkit.judge.kinds import report_kind
from alignkit.judge.verdict import Verdict

MAX_ITEMS = 10_000  # per request; a client sends more in several requests


class JudgeServer(ServedApp):
    """Answers judging requests with a judge (transport-independent, so it is testable)."""

    post_routes = {"/v1/judge": "judge"}

    def __init__(self, judge: Any, api_key: str | None = None) -> None:
        super().__init__(api_key)
        self.judge = judge
        self.kind = report_kind(judge)
        generator = getattr(judge, "generator", None)
        if generator is not None and hasattr(generator, "cancel_event"):  # the hf backend stops mid-generation on shutdown
            generator.cancel_event = self.cancelled

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.judge.name, "object": "judge", "kind": self.kind, "owned_by": "alignkit"}]}

    def handle(self, route: str, body: Any) -> dict[str, Any]:
        """Validate a request body and judge its items (raises `RequestError` with the status to send)."""
        rows = body.get("items") if isinstance(body, dict) else body
        if not isinstance(rows, list):
            raise RequestError(400, "the request body must be a JSON list of judge items, or an object with an 'items' list")
        if len(rows) > MAX_ITEMS:
            raise RequestError(400, f"{len(rows)} items in one request; send at most {MAX_ITEMS} per request")
        items = [_item(i, row) for i, row in enumerate(rows)]
        with self.answering(), self.lock:
            try:
                verdicts = self.judge.judge(items) if items else []
            except ValueError as exc:  # an item the judge cannot judge (e.g. no reference for a reference judge)
                raise RequestError(400, str(exc)) from None
        return {"judge": self.judge.name, "kind": self.kind, "n": len(verdicts), "unparsed": sum(not v.parsed for v in verdicts),
                "verdicts": [v.to_dict() for v in verdicts]}


def _item(index: int, row: Any) -> JudgeItem:
    from pydantic import ValidationError

    if not isinstance(row, dict):
        raise RequestError(400, f"item {index}: expected a JSON object with question/answer/reference, got {type(row).__name__}")
    try:
        return JudgeItem.model_validate(row)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(x) for x in first["loc"]) or "(item)"
        raise RequestError(400, f"item {index}: field {field!r}: {first['msg']}") from None


def serve_judge(judge: Any, host: str = "127.0.0.1", port: int = 8100, api_key: str | None = None,
                allow_unauthenticated: bool = False, stop: threading.Event | None = None) -> int:
    """Serve `judge` over HTTP until SIGINT/SIGTERM (or `stop`); return the exit code."""
    from alignkit.generation.serve import check_bind, serve_app

    check_bind(host, api_key, allow_unauthenticated)
    return serve_app(JudgeServer(judge, api_key), host, port, api_key, f"serving judge {judge.name} at {{url}}/v1/judge", stop)


class RemoteJudge:
    """A judge served by `alignkit judge-serve`, with the local judges' `judge(items) -> list[Verdict]`.

    Items go in requests of at most `batch_size`; a connection failure, timeout or 5xx answer is retried
    `max_retries` times (1 s, 2 s, ... apart), then raises `GenerationError`; a 4xx answer raises
    `ValueError` with the server's message. The key is sent only over https or to this machine, unless
    `allow_plain_http_key` (a trusted network).
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0, max_retries: int = 2,
                 batch_size: int = 512, allow_plain_http_key: bool = False) -> None:
        from alignkit.generation.openai_client import endpoint_api_key

        base = url.rstrip("/")
        for suffix in ("/v1/judge", "/v1"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        self.url = base
        self.api_key = endpoint_api_key(base, api_key, allow_plain_http_key)
        self.timeout, self.max_retries, self.batch_size = timeout, max_retries, batch_size
        (info,) = self._request("GET", "/v1/models")["data"]
        self.name = f"remote:{info['id']}"
        self.report_kind = info.get("kind", "binary")

    def _request(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})}
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(attempt)
            request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                message = _error_message(err)
                if err.code < 500:
                    raise ValueError(f"judge server {self.url} refused the request ({err.code}): {message}") from None
                last = GenerationError(f"judge server {self.url} answered {err.code}: {message}")
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
                last = GenerationError(f"judge server {self.url} is unreachable: {getattr(err, 'reason', err)}")
        raise last or GenerationError(f"judge server {self.url} did not answer")

    def judge(self, items: Sequence[JudgeItem | dict[str, Any]]) -> list[Verdict]:
        """A verdict per item, judged by the server."""
        rows = [it.model_dump(mode="json", exclude={"kind"}) if isinstance(it, JudgeItem) else dict(it) for it in items]
        out: list[Verdict] = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            answer = self._request("POST", "/v1/judge", {"items": chunk})
            if len(answer.get("verdicts", ())) != len(chunk):
                raise GenerationError(f"judge server {self.url} returned {len(answer.get('verdicts', ()))} verdicts for {len(chunk)} items")
            out += [Verdict(**v) for v in answer["verdicts"]]
        return out


def _error_message(err: urllib.error.HTTPError) -> str:
    try:
        return json.loads(err.read())["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return err.reason if isinstance(err.reason, str) else str(err)
