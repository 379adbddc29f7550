"""orthrus-server end to end: the official `openai` client (streamed and not,
chat and completions), llama-server's native routes, every error case of the
issue, the bounded queue, cancellation on disconnect, and a load test.

Needs the binaries; scripts/test.sh builds them before running pytest.
"""
import http.client
import json
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time

import openai
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = REPO / "target" / "debug"
FIXTURE = REPO / "models" / "fixtures" / "tiny-tied-bf16"
KEY = "sk-test-key"


class Server:
    def __init__(self, model: pathlib.Path, log: pathlib.Path, *args: str):
        self.log_path = log
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [str(BIN / "orthrus-server"), "-m", str(model), "--port", "0", "-c", "1024", "-t", "1", *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
            if m:
                self.port = int(m.group(1))
                return
            assert self.proc.poll() is None, log.read_text()
            time.sleep(0.05)
        raise AssertionError("server did not start: " + log.read_text())

    def call(self, method, path, body=None, headers=None, raw=None, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json", **(headers or {})}
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), payload

    def metric(self, name):
        _, _, text = self.call("GET", "/metrics")
        m = re.search(rf"^orthrus_{name} (\S+)$", text, re.M)
        assert m, f"no metric {name} in {text}"
        return float(m.group(1))

    def rss_kib(self):
        status = pathlib.Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))

    def client(self, key="none"):
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=key, max_retries=0)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "tiny.gguf"
    subprocess.run([str(BIN / "orthrus-convert"), str(FIXTURE), "-o", str(out), "--type", "q8_0"], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    s = Server(model, tmp_path_factory.mktemp("log") / "server.log")
    yield s
    s.stop()


def greedy(**kw):
    return {"temperature": 0, "extra_body": {"ignore_eos": True, **kw.pop("extra_body", {})}, **kw}


def test_chat_with_the_openai_client(server):
    c = server.client()
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there"}]
    r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=24, **greedy())
    choice = r.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.role == "assistant" and choice.message.content
    assert r.usage.completion_tokens == 24 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 24
    # Lossless: Orthrus decoding gives AR's greedy text.
    ar = c.chat.completions.create(model="tiny", messages=msgs, max_completion_tokens=24, **greedy(extra_body={"mode": "ar"}))
    assert ar.choices[0].message.content == choice.message.content
    # Streamed: the deltas add up to the same text; usage comes last when asked.
    chunks = list(c.chat.completions.create(
        model="tiny", messages=msgs, max_tokens=24, stream=True, stream_options={"include_usage": True}, **greedy()))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == choice.message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    # usage's extension: drafted tokens as accepted and rejected predictions,
    # and the speculative decoding of this response.
    u = r.usage.model_dump()
    spec, details = u["speculative"], u["completion_tokens_details"]
    assert spec["mode"] == "auto" and spec["steps"] >= 1
    assert details["accepted_prediction_tokens"] == spec["accepted_tokens"]
    assert details["rejected_prediction_tokens"] == spec["draft_tokens"] - spec["accepted_tokens"]
    assert sum(spec["draft_tokens_per_pos"]) == spec["draft_tokens"]
    assert sum(spec["accepted_tokens_per_pos"]) == spec["accepted_tokens"]
    fixed = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=24, **greedy(extra_body={"mode": "orthrus"}))
    spec = fixed.usage.model_dump()["speculative"]
    assert fixed.choices[0].message.content == choice.message.content
    assert spec["mode"] == "orthrus" and spec["draft_steps"] == spec["steps"] and spec["draft_tokens"] > 0
    # Thinking off changes the prompt (the template adds an empty think block).
    off = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=4,
                                    **greedy(extra_body={"chat_template_kwargs": {"enable_thinking": False}}))
    assert off.usage.prompt_tokens > r.usage.prompt_tokens


def test_completions_with_the_openai_client(server):
    c = server.client()
    r = c.completions.create(model="tiny", prompt="def add(a, b):", max_tokens=20, **greedy())
    text = r.choices[0].text
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 20
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="tiny", prompt="def add(a, b):", max_tokens=20, stream=True, **greedy()) if ch.choices)
    assert streamed == text
    # A stop string taken from the text: output ends right before it, finish "stop".
    stop = text[len(text) // 2:len(text) // 2 + 3]
    s = c.completions.create(model="tiny", prompt="def add(a, b):", max_tokens=20, stop=[stop], **greedy())
    assert s.choices[0].text == text[:text.index(stop)]
    assert s.choices[0].finish_reason == "stop"
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="tiny", prompt="def add(a, b):", max_tokens=20, stop=stop, stream=True, **greedy()) if ch.choices)
    assert streamed == s.choices[0].text
    # Sampling with a seed is repeatable.
    # In orthrus mode: auto's draft lengths follow timed costs and the session's acceptance, and
    # the draws a step takes follow them, so there a seed repeats a text only while they do.
    a, b = (c.completions.create(model="tiny", prompt="x", max_tokens=12, temperature=1.0, seed=7,
                                 extra_body={"mode": "orthrus"}).choices[0].text for _ in range(2))
    assert a == b
    models = c.models.list().data
    assert [m.id for m in models] == ["tiny"]


def test_native_routes(server):
    st, _, r = server.call("POST", "/completion", {"prompt": "Hello", "n_predict": 16, "temperature": 0, "ignore_eos": True})
    assert st == 200 and r["stop"] is True and r["stop_type"] == "limit"
    t = r["timings"]
    assert t["predicted_n"] == 16 and t["mode"] == "auto"
    assert t["steps"] >= 1 and t["accepted_per_step"] >= 1.0
    assert sum(t["accepted_histogram"]) == t["steps"]
    assert t["draft_n_accepted"] <= t["draft_n"]
    # A fixed draft length (llama-server's speculative.n_max): every step but
    # the last drafts 3, and the counts add up position by position.
    st, _, r3 = server.call("POST", "/completion", {"prompt": "Hello", "n_predict": 16, "temperature": 0, "ignore_eos": True,
                                                     "mode": "orthrus", "speculative.n_max": 3})
    t3 = r3["timings"]
    assert st == 200 and r3["content"] == r["content"] and t3["mode"] == "orthrus"
    assert t3["draft_steps"] == t3["steps"] and 3 * (t3["steps"] - 1) < t3["draft_n"] <= 3 * t3["steps"]
    assert len(t3["draft_n_per_pos"]) == 3 and sum(t3["draft_n_per_pos"]) == t3["draft_n"]
    assert sum(t3["draft_n_accepted_per_pos"]) == t3["draft_n_accepted"]
    assert t3["draft_n_per_pos"][0] == t3["steps"] and len(t3["accepted_histogram"]) == 4
    assert all(0 <= a <= 1 for a in t3["draft_acceptance_per_pos"])
    st, _, e = server.call("POST", "/completion", {"prompt": "Hello", "draft_max": 8})
    assert st == 400 and e["error"]["code"] == "invalid_draft_max"
    before = server.metric("spec_decode_num_draft_tokens_total")
    st, _, r3 = server.call("POST", "/completion", {"prompt": "Hello", "n_predict": 16, "temperature": 0, "ignore_eos": True,
                                                     "mode": "orthrus", "draft_max": 3})
    assert server.metric("spec_decode_num_draft_tokens_total") - before == r3["timings"]["draft_n"]
    assert server.metric("spec_decode_num_drafts_total") >= r3["timings"]["draft_steps"]
    assert server.metric("spec_decode_num_accepted_tokens_total") >= r3["timings"]["draft_n_accepted"]
    _, _, text = server.call("GET", "/metrics")
    assert re.search(r'^orthrus_spec_decode_num_accepted_tokens_per_pos_total\{position="2"\} \d+$', text, re.M), text
    # Token ids as the prompt give the same answer; tokenize/detokenize round-trip.
    st, _, tok = server.call("POST", "/tokenize", {"content": "Hello"})
    st2, _, r2 = server.call("POST", "/completion", {"prompt": tok["tokens"], "n_predict": 16, "temperature": 0, "ignore_eos": True})
    assert st == st2 == 200 and r2["content"] == r["content"]
    st, _, d = server.call("POST", "/detokenize", {"tokens": r["tokens"]})
    assert st == 200 and d["content"] == r["content"]
    st, _, p = server.call("POST", "/tokenize", {"content": "Hello world", "with_pieces": True})
    assert [x["piece"] for x in p["tokens"]] == ["Hello", " world"]
    # Streamed natively: content chunks, then a last one with stop and timings; no [DONE].
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    c.request("POST", "/completion", body=json.dumps({"prompt": "Hello", "n_predict": 16, "temperature": 0, "ignore_eos": True, "stream": True}),
              headers={"Content-Type": "application/json"})
    events = [json.loads(line[6:]) for line in c.getresponse().read().decode().splitlines() if line.startswith("data: ")]
    assert "".join(e["content"] for e in events) == r["content"]
    assert events[-1]["stop"] is True and events[-1]["timings"]["predicted_n"] == 16
    assert server.call("GET", "/health")[2] == {"status": "ok"}
    assert server.metric("generated_tokens_total") >= 48
    assert server.metric("mean_accepted_tokens") >= 1.0


ERRORS = [
    # (method, path, body or raw bytes, status, code)
    ("POST", "/v1/chat/completions", b"{not json", 400, "invalid_json"),
    ("POST", "/v1/chat/completions", {"messages": "hi"}, 400, "invalid_request"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400, "invalid_request"),
    ("POST", "/v1/chat/completions", {"model": "tiny"}, 400, "missing_messages"),
    ("POST", "/v1/chat/completions", {"messages": []}, 400, "empty_messages"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "invalid_role"),
    ("POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}, 400, "invalid_max_tokens"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "invalid_max_tokens"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 10**15}, 400, "invalid_max_tokens"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_p": 0}, 400, "invalid_top_p"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "mode": "fast"}, 400, "invalid_mode"),
    ("POST", "/v1/completions", {"prompt": "hello " * 1100}, 400, "context_length_exceeded"),
    ("POST", "/v1/completions", {"prompt": ""}, 400, "empty_prompt"),
    ("POST", "/v1/completions", {"max_tokens": 4}, 400, "missing_prompt"),
    ("POST", "/completion", {"prompt": [1, 2, 10**9]}, 400, "invalid_token"),
    ("POST", "/detokenize", {"tokens": [999999]}, 400, "invalid_token"),
    ("POST", "/v1/completions", b"x" * (5 << 20), 413, "request_too_large"),
    ("GET", "/v1/nothing", None, 404, "not_found"),
    ("GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
    ("POST", "/health", {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize("method,path,body,status,code", ERRORS)
def test_bad_requests_get_openai_style_errors(server, method, path, body, status, code):
    raw = body if isinstance(body, bytes) else None
    st, headers, r = server.call(method, path, None if raw else body, raw=raw)
    assert st == status, r
    assert set(r["error"]) == {"message", "type", "code"} and r["error"]["code"] == code
    assert r["error"]["message"]
    if status == 405:
        assert headers["allow"] in ("GET", "POST")
    # The server stays healthy and keeps answering.
    assert server.call("GET", "/health")[0] == 200
    st, _, ok = server.call("POST", "/completion", {"prompt": "Hi", "n_predict": 2})
    assert st == 200 and ok["tokens_predicted"] >= 1


def test_block_32_model_served_in_the_community_layout(tmp_path):
    """A published configuration (block 32, 2 layers, narrow), converted to the
    community layout: streamed and plain greedy completions in orthrus mode equal
    ar mode's, every block of these 40-token answers padded to 32 or reusing a graph."""
    hf = tmp_path / "Orthrus-Qwen3-1.7B"
    subprocess.run([sys.executable, str(REPO / "models" / "make_fixtures.py"), "published", "Orthrus-Qwen3-1.7B",
                    str(hf), "--layers", "2", "--narrow"], check=True, capture_output=True)
    out = tmp_path / "m.gguf"
    subprocess.run([str(BIN / "orthrus-convert"), str(hf), "-o", str(out), "--type", "q8_0"], check=True,
                   capture_output=True)
    # Exact decoding: the CPU's default kernels may part orthrus from ar at a near-tie.
    s = Server(out, tmp_path / "server.log", "--exact")
    try:
        body = {"prompt": "Hello", "n_predict": 40, "temperature": 0, "ignore_eos": True, "mode": "orthrus"}
        st, _, ar = s.call("POST", "/completion", {**body, "mode": "ar"})
        st2, _, orth = s.call("POST", "/completion", body)
        assert st == st2 == 200 and orth["timings"]["mode"] == "orthrus"
        assert orth["tokens"] == ar["tokens"] and len(ar["tokens"]) == 40
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
        c.request("POST", "/completion", body=json.dumps({**body, "stream": True}),
                  headers={"Content-Type": "application/json"})
        events = [json.loads(line[6:]) for line in c.getresponse().read().decode().splitlines()
                  if line.startswith("data: ")]
        assert "".join(e["content"] for e in events) == orth["content"]
    finally:
        s.stop()


def test_sigterm_stops_the_model_before_exiting(model, tmp_path):
    # The model thread frees the model's buffers before the process exits,
    # a generation in flight cancelled: with CUDA, a free left to run during
    # exit's runtime teardown made ggml abort.
    s = Server(model, tmp_path / "server.log")
    status, _, _ = s.call("POST", "/completion", {"prompt": "def add(a, b):", "n_predict": 8})
    assert status == 200
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    c.request("POST", "/completion", body=json.dumps(
        {"prompt": "def add(a, b):", "n_predict": 900, "ignore_eos": True, "stream": True}),
        headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200 and r.readline().startswith(b"data: ")
    s.proc.terminate()
    assert s.proc.wait(timeout=60) == 0
    c.close()
    s.log.close()
    lines = (tmp_path / "server.log").read_text().splitlines()
    assert "orthrus-server: shutting down" in lines, lines[-5:]
    assert lines[-1] == "orthrus-server: stopped", lines[-5:]


def test_api_key(model, tmp_path):
    s = Server(model, tmp_path / "key.log", "--api-key", KEY, "--alias", "orthrus-tiny")
    try:
        assert s.call("GET", "/health")[0] == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            st, _, r = s.call("GET", "/v1/models", headers=headers)
            assert st == 401 and r["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").models.list()
        c = s.client(KEY)
        assert [m.id for m in c.models.list().data] == ["orthrus-tiny"]
        r = c.chat.completions.create(model="orthrus-tiny", messages=[{"role": "user", "content": "x"}], max_tokens=3)
        assert r.usage.completion_tokens >= 1
        # The file name is accepted as the model name too.
        assert c.completions.create(model="tiny.gguf", prompt="x", max_tokens=2).usage.completion_tokens >= 1
    finally:
        s.stop()


def test_exact_decoding(model, server, tmp_path):
    meta = server.call("GET", "/v1/models")[2]["data"][0]["meta"]
    assert (meta["cache_type"], meta["exact"], meta["exact_matmul"]) == ("f16", False, False)
    s = Server(model, tmp_path / "exact.log", "--exact")
    try:
        meta = s.call("GET", "/v1/models")[2]["data"][0]["meta"]
        # On the CPU: exact on ggml's reference kernels, not on our CUDA matmul.
        assert (meta["cache_type"], meta["exact"], meta["exact_matmul"]) == ("f32", True, False)
        st, _, r = s.call("POST", "/completion", {"prompt": "Hi", "n_predict": 4})
        assert st == 200 and r["tokens_predicted"] >= 1
    finally:
        s.stop()
    # An exact server needs an f32 cache: it refuses to start with another.
    out = subprocess.run([str(BIN / "orthrus-server"), "-m", str(model), "--port", "0", "--exact", "--cache-type", "f16"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--exact needs --cache-type f32" in out.stderr, out.stderr


def test_full_queue_answers_503_and_disconnects_cancel(model, tmp_path):
    s = Server(model, tmp_path / "queue.log", "--queue-size", "1")
    try:
        results = []

        def long_request():
            results.append(s.call("POST", "/completion", {"prompt": "Hi", "n_predict": 400, "ignore_eos": True}))

        threads = [threading.Thread(target=long_request) for _ in range(5)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join()
        statuses = sorted(r[0] for r in results)
        busy = [r for r in results if r[0] == 503]
        assert 200 in statuses and busy, statuses
        assert all(r[1]["retry-after"] == "1" and r[2]["error"]["code"] == "server_busy" for r in busy)
        assert s.call("GET", "/health")[0] == 200

        # A streaming client that goes away: its generation stops at the next step.
        before = s.metric("generated_tokens_total")
        sock = socket.create_connection(("127.0.0.1", s.port))
        body = json.dumps({"prompt": "Hi", "n_predict": 1000, "ignore_eos": True, "stream": True}).encode()
        sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        seen = b""
        while b"data: " not in seen:
            chunk = sock.recv(4096)
            assert chunk, seen
            seen += chunk
        sock.close()
        # A request that is not streamed, abandoned while it runs.
        sock = socket.create_connection(("127.0.0.1", s.port))
        body = json.dumps({"prompt": "Hi", "n_predict": 1000, "ignore_eos": True}).encode()
        sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.3)
        sock.close()
        deadline = time.time() + 30
        while s.metric("generations_cancelled_total") < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert s.metric("generations_cancelled_total") == 2
        assert s.metric("requests_processing") == 0
        # Neither ran to its 1000 tokens, and the model is free again.
        assert s.metric("generated_tokens_total") == before
        st, _, r = s.call("POST", "/completion", {"prompt": "Hi", "n_predict": 4, "ignore_eos": True}, timeout=10)
        assert st == 200 and r["tokens_predicted"] == 4
    finally:
        s.stop()


def test_load_and_memory(model, tmp_path):
    """Several hundred requests from 8 concurrent clients: none fails (a 503
    from a full queue is retried, as Retry-After says), and memory returns
    near its baseline."""
    s = Server(model, tmp_path / "load.log", "--queue-size", "4")
    try:
        for _ in range(3):
            s.call("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "warm up"}], "max_tokens": 8})
        baseline = s.rss_kib()
        counts = {"ok": 0, "busy": 0, "failed": []}
        lock = threading.Lock()

        def one(c, i, j):
            """One request of a mix of kinds; returns its status."""
            try:
                if (i + j) % 3 == 0:
                    r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"question {i} {j}"}], max_tokens=8)
                    assert r.usage.completion_tokens >= 1
                elif (i + j) % 3 == 1:
                    chunks = list(c.completions.create(model="tiny", prompt=f"count {j}", max_tokens=8, stream=True))
                    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
                else:
                    return s.call("POST", "/completion", {"prompt": f"n {i}", "n_predict": 8})[0]
                return 200
            except openai.APIStatusError as e:
                return e.status_code

        def client(i):
            c = s.client()
            for j in range(40):
                try:
                    while (st := one(c, i, j)) == 503:
                        with lock:
                            counts["busy"] += 1
                        time.sleep(0.2)
                except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                    st = repr(e)
                with lock:
                    if st == 200:
                        counts["ok"] += 1
                    else:
                        counts["failed"].append(st)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - t0
        after = s.rss_kib()
        print(f"load: {counts['ok']} ok, {counts['busy']} retried 503s, {len(counts['failed'])} failed in {elapsed:.1f} s; "
              f"RSS {baseline} KiB before, {after} KiB after")
        assert counts["failed"] == [] and counts["ok"] == 320
        assert s.metric("requests_queued") == 0 and s.metric("requests_processing") == 0
        assert after < baseline * 1.2 + 16 * 1024, (baseline, after)
    finally:
        s.stop()
