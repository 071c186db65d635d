"""`alignkit serve MODEL`: an OpenAI-compatible server with alignkit's defaults.

`--backend vllm` runs vLLM's own server (`python -m vllm.entrypoints.openai.api_server`; the `vllm`
console script of the CPU build looks for a distribution named `vllm` and fails) with prefix caching on,
host 127.0.0.1, fp32 on CPU and a 1 GiB CPU KV cache unless set. `--backend hf` serves through the
transformers fallback (`alignkit.generation.hf_server`). Both wait until `/health` answers, print the
URL, and shut down cleanly on SIGINT/SIGTERM (exit code 0, also during a request).

A bind to anything but loopback needs an API key, or an explicit `allow_unauthenticated`
(`--allow-unauthenticated`), which is then warned about. The key reaches the vLLM child through its
environment (`VLLM_API_KEY`), never its command line, which every user of the machine can read in `ps`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Sequence


def wait_for_health(url: str, timeout: float, process: subprocess.Popen | None = None, log: deque | None = None) -> None:
    """Poll `url/health` until it answers 200; raise if the server process exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = "".join(log or ())
            raise RuntimeError(f"the server exited with code {process.returncode} before it was healthy; its last output:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not healthy within {timeout:.0f} s")


VLLM_API_KEY_ENV = "VLLM_API_KEY"  # read by vLLM's server when --api-key is not given (vllm/envs.py)


def check_bind(host: str, api_key: str | None, allow_unauthenticated: bool = False) -> None:
    """Refuse to serve a non-loopback address without an API key unless explicitly allowed."""
    from alignkit.generation.openai_client import is_loopback

    if api_key or is_loopback(host) or allow_unauthenticated:
        return
    raise ValueError(f"--host {host} serves the model to other machines, but no --api-key (or ALIGNKIT_API_KEY) is set: "
                     f"anyone who can reach the port could use it. Give an --api-key, bind 127.0.0.1, or pass "
                     f"--allow-unauthenticated")


def _warn_unauthenticated(host: str, port: int) -> None:
    from alignkit.generation.openai_client import is_loopback

    if not is_loopback(host):
        bar = "!" * 100
        print(f"{bar}\nWARNING: serving on {host}:{port} WITHOUT an API key (--allow-unauthenticated): anyone who can "
              f"reach this port can use the model.\n{bar}", file=sys.stderr, flush=True)


def vllm_command(model: str, host: str, port: int, served_name: str | None, lora_modules: Sequence[str],
                 extra_args: Sequence[str]) -> list[str]:
    """The vLLM OpenAI server command line for a resolved model folder (the API key goes in `VLLM_API_KEY`)."""
    import torch

    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", host, "--port", str(port),
           "--enable-prefix-caching", "--served-model-name", served_name or model]
    if not torch.cuda.is_available():
        cmd += ["--dtype", "float32"]
    if lora_modules:
        cmd += ["--enable-lora", "--lora-modules", *lora_modules]
    return cmd + list(extra_args)


def _die_with_parent() -> None:
    """In the vLLM server child (Linux): receive SIGTERM when `alignkit serve` dies, even by SIGKILL,
    so a killed `alignkit serve` never leaves an orphaned server holding the port and the memory."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def serve_app(app, host: str, port: int, api_key: str | None, banner: str, stop: threading.Event | None = None,
              shutdown_grace: float = 30.0) -> int:
    """Answer HTTP requests with `app` (an `HFServer`, or the judge server: see `hf_server.make_http_server`)
    until SIGINT/SIGTERM or `stop` is set; print `banner` (its "{url}" filled) once healthy; return the exit code (0)."""
    from alignkit.generation.hf_server import make_http_server

    if stop is None:
        stop = threading.Event()
        _stop_on_signals(stop)
    httpd = make_http_server(app, host, port)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://{host}:{httpd.server_address[1]}"  # the bound port, also when `port` is 0
    wait_for_health(url, 30)
    if not api_key:
        _warn_unauthenticated(host, port)
    print(banner.replace("{url}", url), flush=True)
    stop.wait()
    # Stop a generation in progress and let its handler answer (503) before the interpreter exits:
    # exiting under a thread that is inside torch aborted the process (exit 134) instead of exiting 0.
    app.cancel()
    httpd.shutdown()
    if not app.wait_idle(shutdown_grace):
        print(f"a request was still running {shutdown_grace:.0f} s after the stop signal", file=sys.stderr, flush=True)
    httpd.server_close()
    print("server stopped", flush=True)
    return 0


def serve(model: str, backend: str = "vllm", host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          lora_modules: Sequence[str] = (), served_name: str | None = None, extra_args: Sequence[str] = (),
          startup_timeout: float = 900.0, allow_unauthenticated: bool = False, shutdown_grace: float = 30.0) -> int:
    """Serve until SIGINT/SIGTERM; return the exit code."""
    from alignkit.modeling.loading import resolve_model_path

    check_bind(host, api_key, allow_unauthenticated)
    if any(a == "--api-key" or a.startswith("--api-key=") for a in extra_args):
        raise ValueError("pass the key with --api-key (it goes to vLLM through its environment), not in the vLLM arguments, "
                         "where `ps` shows it to every user")
    path = resolve_model_path(model)
    name = served_name or model
    url = f"http://{host}:{port}"
    stop = threading.Event()
    _stop_on_signals(stop)
    if backend == "hf":
        from alignkit.generation.hf import HFGenerator
        from alignkit.generation.hf_server import HFServer

        if lora_modules or extra_args:
            raise ValueError("--lora-modules and extra vLLM arguments need --backend vllm")
        hf_server = HFServer(HFGenerator.from_pretrained(path), name, api_key)
        return serve_app(hf_server, host, port, api_key, f"serving {name} (backend hf) at {{url}}/v1", stop, shutdown_grace)
    if backend != "vllm":
        raise ValueError(f"unknown serve backend {backend!r}; known: vllm, hf")
    from alignkit.generation.vllm_engine import vllm_available

    if not vllm_available():
        raise ValueError("vLLM is not installed here; use --backend hf, or install vLLM (see docs/generation.md)")
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if api_key:
        env[VLLM_API_KEY_ENV] = api_key
    process = subprocess.Popen(vllm_command(path, host, port, name, lora_modules, extra_args), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    log: deque = deque(maxlen=40)

    def pump() -> None:  # keep the server's output visible and remember the tail for error messages
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)
            sys.stderr.write(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        wait_for_health(url, startup_timeout, process, log)
        if not api_key:
            _warn_unauthenticated(host, port)
        print(f"serving {name} (backend vllm) at {url}/v1", flush=True)
        while not stop.wait(1.0):
            if process.poll() is not None:
                print(f"the vLLM server exited with code {process.returncode}", file=sys.stderr)
                return process.returncode or 1
        return 0
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        print("server stopped", flush=True)
