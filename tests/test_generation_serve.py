"""`alignkit serve` (vLLM and the HF fallback) answered by the `openai` backend; a dead server gives a clear error."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from alignkit.generation import GenerationError, HFGenerator, SamplingParams
from alignkit.generation.openai_client import OpenAIGenerator
from alignkit.generation.serve import wait_for_health

MODEL = "data/gym/base-s"
PROMPTS = ["What is 3 plus 4?", [{"role": "user", "content": "What is the capital of Dunmark?"}], "List 3 colors."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(backend: str, *extra: str):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if backend == "vllm":  # eager: the server starts in about half the time (no compilation), same answers
        extra = ("--vllm-args=--enforce-eager", *extra)
    proc = subprocess.Popen([sys.executable, "-m", "alignkit", "serve", MODEL, "--backend", backend, "--port", str(port), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, 300, proc)
    except Exception:
        proc.kill()
        raise
    return proc, url


def stop(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


@pytest.fixture(scope="module", params=["hf", "vllm"])
def server(request):
    proc, url = start_server(request.param, "--api-key", "sekret")
    yield request.param, url, proc
    stop(proc)
    assert proc.returncode == 0  # clean shutdown on SIGTERM


@pytest.fixture(scope="module")
def hf():
    return HFGenerator.from_pretrained(MODEL)


def test_chat_and_completions_with_n_and_logprobs(server, hf):
    backend, url, _ = server
    chat = OpenAIGenerator(url, api_key="sekret")
    assert chat.model_name == MODEL
    results = chat.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_tokens=16, logprobs=True))
    for r in results:
        assert len(r.completions) == 3
        for c in r.completions:
            assert c.token_ids and len(c.logprobs) == len(c.token_ids) and all(lp <= 0 for lp in c.logprobs)
    raw = OpenAIGenerator(url, api_key="sekret", template="raw")
    (r,) = raw.generate(["The capital of Dunmark is"], SamplingParams(n=2, max_tokens=8, logprobs=True))
    assert len(r.completions) == 2 and all(c.logprobs for c in r.completions)


def test_greedy_through_the_server_matches_hf(server, hf):
    _, url, _ = server
    params = SamplingParams(n=1, temperature=0, max_tokens=24, logprobs=True)
    remote = OpenAIGenerator(url, api_key="sekret").generate(PROMPTS, params)
    local = hf.generate(PROMPTS, params)
    for a, b in zip(remote, local):
        assert a.completions[0].text == b.completions[0].text
        assert a.completions[0].token_ids == b.completions[0].token_ids
        assert max(abs(x - y) for x, y in zip(a.completions[0].logprobs, b.completions[0].logprobs)) < 1e-4


def test_wrong_api_key_is_a_clear_error(server):
    _, url, _ = server
    with pytest.raises(GenerationError, match="HTTP 401"):
        OpenAIGenerator(url, api_key="wrong", max_retries=0).model_name


def test_unreachable_endpoint_names_it():
    url = f"http://127.0.0.1:{free_port()}"
    start = time.perf_counter()
    with pytest.raises(GenerationError, match=f"{url}/v1 is unreachable"):
        OpenAIGenerator(url, max_retries=1, timeout=5).generate(["hi"], SamplingParams())
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_killing_the_server_mid_request_raises_not_hangs(backend):
    proc, url = start_server(backend)
    client = OpenAIGenerator(url, model_name=MODEL, max_retries=1, timeout=20, concurrency=2)
    threading.Timer(1.0, proc.kill).start()
    start = time.perf_counter()
    with pytest.raises(GenerationError, match="unreachable or stopped responding"):  # EOS suppressed: long enough to be cut off
        client.generate(PROMPTS * 20, SamplingParams(n=8, max_tokens=256, min_tokens=256))
    assert time.perf_counter() - start < 60
    proc.wait(timeout=10)
    # The vLLM server is a child of `alignkit serve`: it must not outlive a SIGKILLed parent.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
        except OSError:
            return
        time.sleep(0.5)
    pytest.fail(f"{url} still answers after `alignkit serve` was killed")
