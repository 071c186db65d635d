"""`alignkit judge-serve` and `RemoteJudge`: one judge served over HTTP to training loops on other machines."""

import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from alignkit.cli import main
from alignkit.data.records import JudgeItem
from alignkit.generation.base import GenerationError
from alignkit.generation.hf_server import make_http_server
from alignkit.judge import JudgeServer, LexicalJudge, ReferenceJudge, RemoteJudge, load_judge_rows, run_judge

GYM_JUDGE = "data/gym/heldout_judge.jsonl"


@pytest.fixture
def serve_judge_here():
    """Serve a judge on a free loopback port in this process; yields a function judge, key -> URL."""
    running = []

    def start(judge, api_key=None):
        httpd = make_http_server(JudgeServer(judge, api_key), "127.0.0.1", 0)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        running.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in running:
        httpd.shutdown()
        httpd.server_close()


def _post(url, body, key=None):
    request = urllib.request.Request(url + "/v1/judge", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_remote_lexical_judge_gives_the_local_verdicts_and_report(serve_judge_here, tmp_path):
    items, _ = load_judge_rows(GYM_JUDGE)
    url = serve_judge_here(LexicalJudge("contains"))
    remote = RemoteJudge(url + "/v1/judge", batch_size=50)  # several requests; the /v1/judge suffix is accepted
    assert remote.name == "remote:contains" and remote.report_kind == "binary"
    local = LexicalJudge("contains").judge(items)
    assert [v.to_dict() for v in remote.judge(items)] == [v.to_dict() for v in local]
    assert remote.judge([{"question": "2+2?", "answer": "It is 4", "reference": "4"}])[0].value == "correct"  # plain dicts too
    here = run_judge(GYM_JUDGE, LexicalJudge("contains"), None, n_resamples=100)
    there = run_judge(GYM_JUDGE, remote, None, n_resamples=100)
    assert there["agreement"] == here["agreement"] and there["judge"] == "remote:contains"


def test_remote_llm_judge_on_a_tiny_model_keeps_raw_outputs_and_parse_status(serve_judge_here, tiny_model_dir):
    from alignkit.generation.hf import HFGenerator

    items = load_judge_rows(GYM_JUDGE)[0][:6]
    judge = ReferenceJudge(HFGenerator.from_pretrained(str(tiny_model_dir)), model_id="tiny", cache=False, progress=False)
    local = judge.judge(items)
    remote = RemoteJudge(serve_judge_here(judge)).judge(items)
    assert [(v.value, v.status, v.raw) for v in remote] == [(v.value, v.status, v.raw) for v in local]
    assert all(v.status == "unparsed" and v.value is None and v.raw for v in remote)  # a random model never says "correct"


def test_key_is_required_and_compared_in_constant_time(serve_judge_here, monkeypatch):
    from alignkit.generation import hf_server

    calls = []
    real = hf_server.hmac.compare_digest
    monkeypatch.setattr(hf_server.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    url = serve_judge_here(LexicalJudge("exact"), api_key="sekret")
    item = {"question": "q", "answer": "a", "reference": "a"}
    assert _post(url, [item])[0] == 401 and _post(url, [item], "sekreX")[0] == 401
    status, body = _post(url, [item], "sekret")
    assert status == 200 and body["verdicts"][0]["value"] == "correct" and body["unparsed"] == 0
    with pytest.raises(ValueError, match="401"):
        RemoteJudge(url, api_key="wrong")
    assert RemoteJudge(url, api_key="sekret").judge([item])[0].value == "correct"
    assert len(calls) >= 4


@pytest.mark.parametrize("body, message", [
    ({"items": "x"}, "JSON list of judge items"),
    ([{"question": "", "answer": "a", "reference": "a"}], "item 0: field 'question'"),
    ([{"question": "q", "answer": "a", "reference": "a"}, {"question": "q"}], "item 1: field 'answer'"),
    ([{"question": "q", "answer": "a", "reference": "a"}, "text"], "item 1: expected a JSON object"),
    ([{"question": "q", "answer": "a"}], "need a reference answer"),
])
def test_bad_requests_are_400_naming_the_item_and_field(serve_judge_here, body, message):
    status, answer = _post(serve_judge_here(LexicalJudge("exact")), body)
    assert status == 400 and message in answer["error"]["message"]


def test_remote_judge_fails_fast_and_never_sends_a_key_in_clear_to_another_host():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(GenerationError, match="unreachable"):
        RemoteJudge(f"http://127.0.0.1:{port}", max_retries=0)
    with pytest.raises(GenerationError, match="refusing to send an API key over plain http"):
        RemoteJudge("http://192.0.2.1:8100", api_key="k")


def test_judge_serve_refuses_a_public_bind_without_a_key_before_loading_a_model(capsys, monkeypatch):
    monkeypatch.delenv("ALIGNKIT_API_KEY", raising=False)
    monkeypatch.setattr("alignkit.generation.backends.load_generator", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["judge-serve", "--judge", "llm", "--model", "data/gym/base-s", "--host", "0.0.0.0"]) == 2
    assert "no --api-key" in capsys.readouterr().err


def test_cli_judge_serve_and_judge_remote_end_to_end(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "alignkit", "judge-serve", "--judge", "contains", "--port", str(port),
                             "--api-key", "k3y"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        from alignkit.generation.serve import wait_for_health

        wait_for_health(f"http://127.0.0.1:{port}", 60, proc)
        out = tmp_path / "remote"
        assert main(["judge", "--data", GYM_JUDGE, "--judge", "remote", "--endpoint", f"http://127.0.0.1:{port}",
                     "--api-key", "k3y", "--bootstrap", "100", "--out", str(out)]) == 0
        remote = json.loads((out / "report.json").read_text())
        local = run_judge(GYM_JUDGE, LexicalJudge("contains"), None, n_resamples=100)
        assert remote["judge"] == "remote:contains" and remote["agreement"] == local["agreement"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "serving judge contains at http://127.0.0.1" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_judge_items_round_trip_through_the_server_schema():
    item = JudgeItem(question="q", answer="a", reference=["x", "y"], model="m", human_label="correct")
    assert JudgeItem.model_validate(item.model_dump(mode="json", exclude={"kind"})) == item
