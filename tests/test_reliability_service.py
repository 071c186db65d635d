"""Red team, secrets and service: keys that leaked to any URL, servers open to everyone, requests that hung
for minutes, an HF server that dropped or mis-served bad requests, orphan temp files (issue #14)."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alignkit.cli import main
from alignkit.generation import GenerationError, SamplingParams
from alignkit.generation.openai_client import OpenAIGenerator

MODEL = "data/gym/base-s"
SECRET = "sk-env-secret-do-not-leak"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """A minimal OpenAI-compatible endpoint on loopback that records every Authorization header."""

    def __init__(self) -> None:
        self.auth: list[str | None] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return

            def _reply(self, payload):
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # /v1/models
                recorder.auth.append(self.headers.get("Authorization"))
                self._reply({"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "me"}]})

            def do_POST(self):  # /v1/chat/completions
                recorder.auth.append(self.headers.get("Authorization"))
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._reply({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "correct"}, "finish_reason": "stop"}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


# -- API keys ----------------------------------------------------------------------------------


def test_openai_key_from_the_environment_is_not_sent_to_another_endpoint(recorder, monkeypatch):
    # Before: OPENAI_API_KEY went to ANY endpoint URL, plain http included.
    from alignkit.generation.openai_client import endpoint_api_key

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    OpenAIGenerator(recorder.url).generate(["hi"], SamplingParams(max_tokens=4))
    assert recorder.auth and all(SECRET not in (a or "") for a in recorder.auth)
    assert endpoint_api_key("https://api.openai.com/v1") == SECRET  # where the key belongs
    assert endpoint_api_key("http://api.openai.com/v1") is None  # never over plain http
    assert endpoint_api_key("https://example.com/v1") is None


def test_cli_judge_and_generate_do_not_send_the_environment_key(recorder, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert main(["judge", "--judge", "llm", "--endpoint", recorder.url, "--data", "data/samples/judge.jsonl",
                 "--out", str(tmp_path / "j"), "--no-cache"]) == 0
    assert main(["generate", "--model", recorder.url, "--prompts", "data/samples/prompt.jsonl", "--n", "1",
                 "--max-tokens", "4", "--no-cache", "--out", str(tmp_path / "g.jsonl")]) == 0
    assert len(recorder.auth) > 2 and all(SECRET not in (a or "") for a in recorder.auth)
    # An explicit --api-key is sent (loopback: it never leaves this machine).
    assert main(["generate", "--model", recorder.url, "--prompts", "data/samples/prompt.jsonl", "--n", "1", "--max-tokens",
                 "4", "--no-cache", "--api-key", "explicit-key", "--out", str(tmp_path / "g.jsonl")]) == 0
    assert recorder.auth[-1] == "Bearer explicit-key"


def test_no_key_over_plain_http_to_another_host_without_opt_in(capsys, tmp_path):
    with pytest.raises(GenerationError, match=r"refusing to send an API key over plain http to http://192\.0\.2\.1:9/v1"):
        OpenAIGenerator("http://192.0.2.1:9", api_key="k")  # fails before any connection
    OpenAIGenerator("http://192.0.2.1:9", api_key="k", allow_plain_http_key=True)  # explicit opt-in
    OpenAIGenerator("https://192.0.2.1:9", api_key="k")
    OpenAIGenerator("http://192.0.2.1:9")  # no key, nothing to leak
    assert main(["judge", "--judge", "llm", "--endpoint", "http://192.0.2.1:9/v1", "--api-key", "k",
                 "--data", "data/samples/judge.jsonl", "--out", str(tmp_path / "j")]) == 2
    assert "refusing to send an API key over plain http" in capsys.readouterr().err


# -- alignkit serve: binding, key on the command line, constant-time check ----------------------


def test_serve_refuses_a_public_bind_without_a_key(capsys):
    # Before: --host 0.0.0.0 without --api-key served everyone, with no warning.
    env = {k: v for k, v in os.environ.items() if k != "ALIGNKIT_API_KEY"}
    try:  # a subprocess with a timeout: a server that does start must not hang the test
        proc = subprocess.run([sys.executable, "-m", "alignkit", "serve", MODEL, "--backend", "hf", "--host", "0.0.0.0",
                               "--port", str(free_port())], capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("alignkit serve --host 0.0.0.0 without --api-key started serving")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--host 0.0.0.0 serves the model to other machines, but no --api-key" in proc.stderr
    assert "serving" not in proc.stdout  # refused before loading the model
    from alignkit.generation.serve import _warn_unauthenticated, check_bind

    check_bind("0.0.0.0", "key")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", None, allow_unauthenticated=True)
    _warn_unauthenticated("0.0.0.0", 8000)
    assert "WARNING: serving on 0.0.0.0:8000 WITHOUT an API key" in capsys.readouterr().err


def test_vllm_child_gets_the_key_in_its_environment_not_its_command_line(monkeypatch):
    # Before: `--api-key sekret` was on the vLLM child's command line, readable by any user in `ps`.
    from alignkit.generation import serve as serve_module

    seen = {}

    class Stop(Exception):
        pass

    def fake_popen(cmd, env=None, **kwargs):
        seen["cmd"], seen["env"] = cmd, env
        raise Stop

    monkeypatch.setattr(serve_module.subprocess, "Popen", fake_popen)
    monkeypatch.setattr("alignkit.generation.vllm_engine.vllm_available", lambda: True)
    with pytest.raises(Stop):
        serve_module.serve(MODEL, "vllm", api_key="sekret-key")
    assert not any("sekret-key" in part for part in seen["cmd"]) and "--api-key" not in seen["cmd"]
    assert seen["env"]["VLLM_API_KEY"] == "sekret-key"
    with pytest.raises(ValueError, match="pass the key with --api-key"):
        serve_module.serve(MODEL, "vllm", api_key="k", extra_args=["--api-key", "k"])


def test_hf_server_compares_the_key_in_constant_time(monkeypatch, hf_server):
    from alignkit.generation import hf_server as module

    calls = []
    real = module.hmac.compare_digest
    monkeypatch.setattr(module.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    server, _ = hf_server
    server.api_key = "sekret"
    try:
        assert server.authorized("Bearer sekret") and not server.authorized("Bearer sekreX") and not server.authorized(None)
    finally:
        server.api_key = None
    assert len(calls) == 3


# -- timeouts and retries -------------------------------------------------------------------------


@pytest.fixture
def silent_endpoint():
    """A socket that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held, stop = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    stop.set()
    for conn in held:
        conn.close()
    sock.close()


@pytest.mark.parametrize("command", ["judge", "generate"])
def test_endpoint_that_never_answers_fails_fast_with_visible_retries(silent_endpoint, tmp_path, command):
    # Before: 4 x 120 s = 487 s with no output at all.
    argv = {"judge": ["judge", "--judge", "llm", "--endpoint", silent_endpoint, "--data", "data/samples/judge.jsonl",
                      "--out", str(tmp_path / "j"), "--no-cache"],
            "generate": ["generate", "--model", silent_endpoint, "--prompts", "data/samples/prompt.jsonl", "--no-cache",
                         "--out", str(tmp_path / "g.jsonl")]}[command]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "alignkit", *argv, "--timeout", "1", "--retries", "1"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "300"})
    assert time.perf_counter() - start < 30
    err = " ".join((proc.stdout + proc.stderr).split())  # log lines (rich) and the error line
    assert proc.returncode == 2, proc.stderr
    assert f"retrying request to {silent_endpoint}/models (attempt 2/2) after timeout (1 s)" in err
    assert f"alignkit: OpenAI-compatible endpoint {silent_endpoint} is unreachable or stopped responding (timeout (1 s); " \
           f"gave up after 2 attempts: --timeout 1, --retries 1)" in err
    assert "Traceback" not in proc.stderr


def test_a_slow_endpoint_shows_progress_while_waiting(silent_endpoint, caplog):
    client = OpenAIGenerator(silent_endpoint, timeout=2.5, max_retries=0, progress_every=1)
    with caplog.at_level("INFO", logger="alignkit.generation.openai_client"), pytest.raises(GenerationError):
        client.model_name
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"waiting for {silent_endpoint}")]
    assert len(waits) >= 2 and "listing models after 1 s" in waits[0]


# -- serve --backend hf: bad requests answered, not dropped or mis-served --------------------------


@pytest.fixture(scope="module")
def hf_server():
    from alignkit.generation.hf import HFGenerator
    from alignkit.generation.hf_server import HFServer, make_http_server

    server = HFServer(HFGenerator.from_pretrained(MODEL), MODEL)
    httpd = make_http_server(server, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield server, httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def post(port: int, path: str, body, timeout: float = 60) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json"})
    response = conn.getresponse()
    status, payload = response.status, json.loads(response.read() or b"{}")
    conn.close()
    return status, payload


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "What is 3 plus 4?"}], "max_tokens": 4}


@pytest.mark.parametrize("body, status, message", [
    (["not", "an", "object"], 400, "the request body must be a JSON object, got list"),  # before: connection dropped
    (b"{not json", 400, "not valid JSON"),
    ({**CHAT, "model": "some-other-model"}, 404, "The model `some-other-model` does not exist."),  # before: served
    ({**CHAT, "n": 0}, 400, "'n' must be an integer >= 1, got 0"),  # before: served as n=1
    ({**CHAT, "max_tokens": 0}, 400, "'max_tokens' must be an integer >= 1, got 0"),
    ({**CHAT, "stream": True}, 400, "streaming is not supported"),  # before: 200 with 0 chunks
    ({**CHAT, "temperature": 0, "n": 2}, 400, "temperature 0 is greedy decoding"),
])
def test_hf_server_rejects_bad_requests_with_vllm_status_codes(hf_server, body, status, message):
    _, port = hf_server
    got, payload = post(port, "/v1/chat/completions", body)
    assert got == status and message in payload["error"]["message"]


def test_hf_server_rejects_a_prompt_beyond_the_context_before_generating(hf_server):
    # Before: 100k characters against 2,048 positions generated for 26 s, holding the lock.
    server, port = hf_server
    start = time.perf_counter()
    status, payload = post(port, "/v1/completions", {"model": MODEL, "prompt": "seven " * 17000, "max_tokens": 16})
    assert status == 400 and "maximum context length is 2048 tokens" in payload["error"]["message"]
    assert time.perf_counter() - start < 5
    status, _ = post(port, "/v1/completions", {"model": MODEL, "prompt": "The capital of", "max_tokens": 2047})
    assert status == 400  # a short prompt with max_tokens past the context too
    status, payload = post(port, "/v1/chat/completions", CHAT)
    assert status == 200 and payload["choices"][0]["message"]["content"] is not None  # still serves valid requests


def test_sigterm_during_a_request_exits_0(tmp_path):
    # Before: the interpreter exited under a handler thread inside torch and aborted (exit 134).
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "alignkit", "serve", MODEL, "--backend", "hf", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        from alignkit.generation.serve import wait_for_health

        wait_for_health(f"http://127.0.0.1:{port}", 120, proc)
        answer = {}
        long = {"model": MODEL, "prompt": "Once", "max_tokens": 2000, "min_tokens": 2000, "n": 8}
        client = threading.Thread(target=lambda: answer.update(zip(("status", "body"), post(port, "/v1/completions", long))))
        client.start()
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        start = time.perf_counter()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        assert time.perf_counter() - start < 30
        client.join(timeout=10)
        assert answer.get("status") == 503 and "shutting down" in answer["body"]["error"]["message"]
    finally:
        if proc.poll() is None:
            proc.kill()


# -- no orphan temp files ------------------------------------------------------------------------------


def test_write_jsonl_failing_mid_way_leaves_no_tmp_and_keeps_the_old_file(tmp_path):
    from alignkit.generation.rollouts import write_jsonl

    out = tmp_path / "out.jsonl"
    write_jsonl(out, [{"a": 1}])
    with pytest.raises(TypeError):
        write_jsonl(out, [{"a": 2}, {"b": object()}])  # the second row does not serialise
    assert out.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_judge_outputs_failing_mid_way_leave_no_tmp_and_no_half_file(tmp_path):
    from alignkit.judge.run import run_judge
    from alignkit.judge.verdict import Verdict

    class Judge:
        name = "stub"

        def __init__(self, raw):
            self.raw = raw

        def judge(self, items):
            return [Verdict("correct", "ok", [self.raw if i == 2 else "fine"]) for i in range(len(items))]

    out = tmp_path / "j"
    run_judge("data/samples/judge.jsonl", Judge("fine"), out, n_resamples=10)
    before = (out / "verdicts.jsonl").read_text()
    with pytest.raises(TypeError):  # the third verdict does not serialise
        run_judge("data/samples/judge.jsonl", Judge(object()), out, n_resamples=10)
    assert (out / "verdicts.jsonl").read_text() == before  # before: cut off after two rows
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_no_tmp_files_left_in_the_rollout_cache_after_a_failure(tmp_path, monkeypatch):
    from alignkit.generation.base import Completion, GenerationResult
    from alignkit.generation.rollouts import rollouts

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))

    class Gen:
        def generate(self, prompts, params):
            return [GenerationResult(p, [Completion(object(), [], "stop")]) for p in prompts]  # text does not serialise

    with pytest.raises(TypeError):
        rollouts("http://127.0.0.1:9/v1", [{"prompt": "p"}, {"prompt": "q"}], SamplingParams(max_tokens=2), make_generator=Gen)
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
