"""Load a page in headless Chromium (Debian's package) over the DevTools protocol, with no extra package.

`--remote-debugging-pipe` makes Chromium read protocol commands from file descriptor 3 and write replies and
events to descriptor 4, each message NUL-terminated JSON. `browse(url)` opens a tab, loads the page and waits for
its load event. It returns a full-page PNG screenshot and every error the page produced: `console.error` or
`console.assert` calls, uncaught exceptions, and browser log errors such as a resource that failed to load.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-pipe"]


def browse(url: str, width: int = 1280, height: int = 900, timeout: float = 60.0) -> tuple[bytes, list[str]]:
    """(full-page PNG screenshot, errors) of `url` in a fresh headless Chromium profile."""
    commands_read, commands_write = os.pipe()
    events_read, events_write = os.pipe()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")

    # bash moves the pipe ends onto descriptors 3 and 4 for Chromium (no preexec_fn: unsafe in a threaded process)
    # (through two spare descriptors first, since the pipe ends may themselves be 3 or 4)
    launch = f'exec "$0" "$@" 98<&{commands_read} 99>&{events_write} 3<&98 4>&99 98<&- 99>&-'
    proc = subprocess.Popen(["bash", "-c", launch, CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                             "about:blank"], pass_fds=(commands_read, events_write), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(commands_read)
    os.close(events_write)
    sink = os.fdopen(commands_write, "wb")
    source = events_read
    pending, events, counter = b"", [], [0]
    deadline = time.monotonic() + timeout

    def send(method: str, params: dict | None = None, session: str | None = None) -> dict:
        counter[0] += 1
        message = {"id": counter[0], "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        sink.write(json.dumps(message).encode() + b"\0")
        sink.flush()
        reply = until(lambda m: m.get("id") == counter[0])
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def until(done) -> dict:
        nonlocal pending
        while time.monotonic() < deadline:
            while b"\0" in pending:
                raw, pending = pending.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    events.append(message)
                if done(message):
                    return message
            ready, _, _ = select.select([source], [], [], 0.5)
            if ready:
                chunk = os.read(source, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                pending += chunk
        raise TimeoutError(f"{url}: no answer from Chromium within {timeout:.0f}s")

    try:
        target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            send(f"{domain}.enable", session=session)
        send("Page.navigate", {"url": url}, session=session)
        until(lambda m: m.get("method") == "Page.loadEventFired")
        shot = send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session)["data"]
    finally:
        proc.kill()
        proc.wait()
        sink.close()
        os.close(source)
        shutil.rmtree(profile, ignore_errors=True)
    errors = []
    for event in events:
        p = event.get("params", {})
        if event["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif event["method"] == "Runtime.exceptionThrown":
            errors.append("exception: " + p.get("exceptionDetails", {}).get("text", ""))
        elif event["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
    return base64.b64decode(shot), errors
