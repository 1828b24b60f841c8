"""End-to-end tests of `hyserve serve` with the official openai client on loopback.

The model is a tiny random fixture (conftest.py): its text is noise, so the tests check
the protocol (shapes, SSE framing, finish reasons, usage, logprobs), stop strings against
a greedy reference run, errors, concurrency, cancellation and shutdown. After each group
/health?check=1 must report a clean pool (hs_engine_check) and no page in use.
"""
import concurrent.futures as cf
import json
import os
import signal
import socket
import threading
import time

import openai
import pytest

from conftest import MODEL_NAME, ROOT, Server

GREEDY = dict(temperature=0, extra_body={"ignore_eos": True})


def test_models_and_health(server, client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL_NAME]
    r = server.http.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    h = server.health()
    assert h["pool_check"] == "ok" and h["pages_total"] > 0


def test_completion(client):
    r = client.completions.create(model=MODEL_NAME, prompt="The capital of France is", max_tokens=5, **GREEDY)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert len(r.choices) == 1 and isinstance(r.choices[0].text, str)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 5


def test_completion_token_prompt(client):
    r = client.completions.create(model=MODEL_NAME, prompt=[9707, 11, 1879], max_tokens=3, **GREEDY)
    assert r.usage.prompt_tokens == 3 and r.usage.completion_tokens == 3


def stream_completion(client, **kw):
    chunks = list(client.completions.create(model=MODEL_NAME, stream=True, **kw))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return chunks, text, finals


def test_completion_stream_matches_non_stream(client):
    ref = client.completions.create(model=MODEL_NAME, prompt="Once upon a time", max_tokens=12, **GREEDY)
    chunks, text, finals = stream_completion(client, prompt="Once upon a time", max_tokens=12,
                                             stream_options={"include_usage": True}, **GREEDY)
    assert text == ref.choices[0].text
    assert finals == ["length"]
    assert all(c.object == "text_completion" for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_chat(client):
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi"}]
    r = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=6, **GREEDY)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant" and isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 6
    # text parts are accepted too, and give the same prompt
    parts = [{"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
             {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi"}]}]
    r2 = client.chat.completions.create(model=MODEL_NAME, messages=parts, max_tokens=6, **GREEDY)
    assert r2.usage.prompt_tokens == r.usage.prompt_tokens
    assert r2.choices[0].message.content == r.choices[0].message.content


def test_chat_stream(client):
    msgs = [{"role": "user", "content": "Count to five"}]
    ref = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_completion_tokens=10, **GREEDY)
    chunks = list(client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_completion_tokens=10, stream=True,
                                                 stream_options={"include_usage": True}, **GREEDY))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ref.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert chunks[-1].usage.prompt_tokens == ref.usage.prompt_tokens


def test_sse_framing_raw(server):
    body = {"model": MODEL_NAME, "prompt": "abc", "max_tokens": 4, "stream": True, "temperature": 0, "ignore_eos": True}
    r = server.http.post("/v1/completions", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    raw = r.text
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for ev in events[:-2]:
        assert ev.startswith("data: ")
        json.loads(ev[6:])


def pick_stop(text):
    """A stop string from the middle of a reference output: (stop, expected text)."""
    for k in list(range(len(text) // 3, len(text) - 2)) + list(range(1, len(text) // 3)):
        s = text[k:k + 2]
        if s.strip() and text.find(s) == k:
            return s, text[:k]
    return None, None


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings(client, stream):
    ref = client.completions.create(model=MODEL_NAME, prompt="Stop here", max_tokens=24, **GREEDY).choices[0].text
    stop, want = pick_stop(ref)
    if stop is None:
        pytest.skip("reference output too short for a stop string")
    stops = ["\u00a7never-in-output\u00a7", stop]
    if stream:
        _, text, finals = stream_completion(client, prompt="Stop here", max_tokens=24, stop=stops, **GREEDY)
        assert finals == ["stop"]
    else:
        r = client.completions.create(model=MODEL_NAME, prompt="Stop here", max_tokens=24, stop=stops, **GREEDY)
        text = r.choices[0].text
        assert r.choices[0].finish_reason == "stop"
    assert text == want and stop not in text
    # a single string works as well (chat)
    msgs = [{"role": "user", "content": "Stop here"}]
    cref = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=24, **GREEDY)
    stop, want = pick_stop(cref.choices[0].message.content)
    if stop is not None:
        r = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=24, stop=stop, **GREEDY)
        assert r.choices[0].message.content == want and r.choices[0].finish_reason == "stop"


def test_logprobs_completion(client):
    r = client.completions.create(model=MODEL_NAME, prompt="Hello", max_tokens=6, logprobs=3, **GREEDY)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 6 == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert all(x <= 0 for x in lp.token_logprobs)
    assert all(1 <= len(t) <= 3 for t in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    # greedy: the sampled token is the most likely one
    for tok_lp, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert tok_lp == pytest.approx(max(top.values()), abs=1e-4)
    # streaming: one logprobs entry per token
    chunks, _, _ = stream_completion(client, prompt="Hello", max_tokens=6, logprobs=2, **GREEDY)
    toks = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert len(toks) == 6


def test_logprobs_chat(client):
    msgs = [{"role": "user", "content": "Hello"}]
    r = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=5, logprobs=True, top_logprobs=2,
                                       **GREEDY)
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    for e in content:
        assert isinstance(e.token, str) and e.logprob <= 0 and isinstance(e.bytes, list)
        assert len(e.top_logprobs) == 2
        assert all(isinstance(t.bytes, list) for t in e.top_logprobs)
    chunks = list(client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=5, logprobs=True,
                                                 top_logprobs=1, stream=True, **GREEDY))
    n = sum(len(c.choices[0].logprobs.content) for c in chunks if c.choices and c.choices[0].logprobs)
    assert n == 5


def test_sampling_params_and_seed(client):
    kw = dict(model=MODEL_NAME, prompt="Random", max_tokens=8, temperature=1.0, top_p=0.9, seed=1234,
              extra_body={"top_k": 50, "min_p": 0.01, "ignore_eos": True})
    a = client.completions.create(**kw).choices[0].text
    b = client.completions.create(**kw).choices[0].text
    assert a == b


GOLDEN = os.path.join(ROOT, "tests", "fixtures", "golden")
FAMILIES = ["qwen3_5", "qwen3_5_text", "qwen3_next", "qwen3_5_moe"]


@pytest.mark.parametrize("family", FAMILIES)
def test_golden_through_server(family):
    """Real safetensors weights (tiny HF models of each family) through the whole server,
    token-id prompts, logprobs as token ids: HF's float32 greedy tokens and logprobs
    (tools/gen_golden.py), up to the first near-tie of the reference."""
    path = os.path.join(GOLDEN, family)
    if not os.path.exists(os.path.join(path, "golden.json")):
        pytest.skip("no golden fixture")
    g = json.load(open(os.path.join(path, "golden.json")))
    s = Server("--state-dtype", "f32",  # the reference ran in float32
               model=["--model", path, "--tokenizer", os.path.join(ROOT, "tests", "data", "qwen3-tokenizer")])
    try:
        client = s.client()
        for case in g["cases"]:
            r = client.completions.create(model=MODEL_NAME, prompt=case["prompt_ids"], max_tokens=g["n_gen"],
                                          temperature=0, logprobs=5,
                                          extra_body={"ignore_eos": True, "return_tokens_as_token_ids": True})
            lp = r.choices[0].logprobs
            assert r.usage.prompt_tokens == case["prompt_len"] and len(lp.tokens) == g["n_gen"]
            for i, (want, margin) in enumerate(zip(case["generated"], case["gen_margin"])):
                where = (case["prompt_len"], i)
                assert lp.tokens[i] == f"token_id:{want}", where
                assert lp.token_logprobs[i] == pytest.approx(case["gen_top5"][i][0]["logprob"], abs=2e-4), where
                ref = {f"token_id:{t['token']}": t["logprob"] for t in case["gen_top5"][i]}
                common = set(ref) & set(lp.top_logprobs[i])  # (the 5th place may be a near-tie)
                assert len(common) >= 4, where
                for tok in common:
                    assert lp.top_logprobs[i][tok] == pytest.approx(ref[tok], abs=2e-4), where
                if margin < g["check"]["greedy_until_margin_below"]:
                    break  # a near-tie: either side may break it differently
    finally:
        assert s.stop() == 0


# ---- errors ---------------------------------------------------------------------------

def err(r, status):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["message"]
    return e


def test_bad_inputs(server, client):
    http = server.http
    hdr = {"Content-Type": "application/json"}
    err(http.post("/v1/completions", content=b"{not json", headers=hdr), 400)
    err(http.post("/v1/completions", content=b"[1,2]", headers=hdr), 400)
    err(http.post("/v1/completions", content=b'{"prompt": "a\xff\xfe"}', headers=hdr), 400)  # invalid UTF-8
    err(http.post("/v1/completions", content=b'{"prompt": "\\ud800"}', headers=hdr), 400)  # lone surrogate
    err(http.post("/v1/completions", json={}), 400)
    assert err(http.post("/v1/completions", json={"prompt": "a", "max_tokens": "5"}), 400)["param"] == "max_tokens"
    assert err(http.post("/v1/completions", json={"prompt": "a", "max_tokens": 0}), 400)["param"] == "max_tokens"
    assert err(http.post("/v1/completions", json={"prompt": "a", "max_tokens": 2.5}), 400)["param"] == "max_tokens"
    assert err(http.post("/v1/completions", json={"prompt": "a", "temperature": "hot"}), 400)["param"] == "temperature"
    assert err(http.post("/v1/completions", json={"prompt": "a", "temperature": -1}), 400)["param"] == "temperature"
    assert err(http.post("/v1/completions", json={"prompt": "a", "top_p": 0}), 400)["param"] == "top_p"
    assert err(http.post("/v1/completions", json={"prompt": "a", "stop": 5}), 400)["param"] == "stop"
    assert err(http.post("/v1/completions", json={"prompt": "a", "n": 2}), 400)["param"] == "n"
    assert err(http.post("/v1/completions", json={"prompt": "a", "logprobs": 50}), 400)["param"] == "logprobs"
    assert err(http.post("/v1/completions", json={"prompt": "a", "stream": "yes"}), 400)["param"] == "stream"
    assert err(http.post("/v1/completions", json={"prompt": ""}), 400)["param"] == "prompt"
    assert err(http.post("/v1/completions", json={"prompt": [1, "x"]}), 400)["param"] == "prompt"
    assert err(http.post("/v1/completions", json={"prompt": [10 ** 9]}), 400)["param"] == "prompt"
    assert err(http.post("/v1/chat/completions", json={"messages": "hi"}), 400)["param"] == "messages"
    assert err(http.post("/v1/chat/completions", json={"messages": []}), 400)["param"] == "messages"
    assert err(http.post("/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]}),
               400)["param"] == "messages"
    assert err(http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": 5}]}),
               400)["param"] == "messages"
    assert err(http.post("/v1/chat/completions",
                         json={"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
               400)["param"] == "top_logprobs"
    # the prompt is longer than the context (--max-model-len 512), or prompt + max_tokens is
    e = err(http.post("/v1/completions", json={"prompt": "hello " * 2000}), 400)
    assert e["code"] == "context_length_exceeded"
    e = err(http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 600}), 400)
    assert e["code"] == "context_length_exceeded"
    # oversized body: 413 (Content-Length known up front, and a chunked upload)
    big = b'{"prompt": "' + b"a" * (5 << 20) + b'"}'
    err(http.post("/v1/completions", content=big, headers=hdr), 413)

    def gen():
        for _ in range(6):
            yield b"a" * (1 << 20)
    r = http.post("/v1/completions", content=gen(), headers=hdr)
    assert r.status_code == 413
    # unknown model, route, method
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="a", max_tokens=1)
    err(http.get("/v1/nothing"), 404)
    err(http.get("/v1/completions"), 405)
    # the openai client maps 400s to BadRequestError
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL_NAME, prompt="a", max_tokens=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "x"}], n=3)
    # still serving, and nothing leaked
    r = client.completions.create(model=MODEL_NAME, prompt="still alive", max_tokens=2, **GREEDY)
    assert r.usage.completion_tokens == 2
    h = server.wait_idle()
    assert h["pool_check"] == "ok" and h["pages_in_use"] == 0


def test_mutated_bodies(server):
    """300 randomly damaged request bodies, 16 at a time: each gets a 200 or a 4xx with an
    error object; the server keeps serving and leaks no pages."""
    import random
    rng = random.Random(1234)
    valid = [json.dumps({"model": MODEL_NAME, "prompt": "mutate me", "max_tokens": 3, "stop": ["x"], "logprobs": 2,
                         "temperature": 0.5, "seed": 3}).encode(),
             json.dumps({"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                         "stream": True, "logprobs": True, "top_logprobs": 1}).encode()]

    def mutate(b):
        b = bytearray(b)
        for _ in range(rng.randint(1, 4)):
            op = rng.randint(0, 3)
            i = rng.randrange(len(b))
            if op == 0:
                b[i] = rng.randrange(256)
            elif op == 1:
                del b[i:i + rng.randint(1, 8)]
            elif op == 2:
                b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            else:
                b = b[:i]
            if not b:
                b = bytearray(b"{")
        return bytes(b)

    jobs = [(("/v1/completions", "/v1/chat/completions")[k % 2], mutate(valid[k % 2])) for k in range(300)]

    def one(job):
        path, body = job
        r = server.http.post(path, content=body, headers={"Content-Type": "application/json"})
        if r.status_code != 200:
            assert 400 <= r.status_code < 500, (r.status_code, body, r.text)
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        return r.status_code

    with cf.ThreadPoolExecutor(max_workers=16) as ex:
        codes = list(ex.map(one, jobs, timeout=120))
    assert len(codes) == 300 and any(c == 200 for c in codes) and any(c == 400 for c in codes)
    h = server.wait_idle()
    assert h["pool_check"] == "ok" and h["pages_in_use"] == 0, h


def test_garbage_requests(server):
    """Raw garbage on the socket: the server answers or closes, and keeps serving."""
    for payload in [b"\x00\xff\x13garbage\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"pro"]:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        try:
            s.recv(4096)
        except OSError:
            pass
        s.close()
    assert server.http.get("/health").status_code == 200


def test_metrics(server, client):
    client.completions.create(model=MODEL_NAME, prompt="metrics", max_tokens=3, **GREEDY)
    text = server.http.get("/metrics").text
    for name in ["hyserve_num_requests_running", "hyserve_num_requests_waiting", "hyserve_kv_pages",
                 "hyserve_state_pages", "hyserve_state_pages_per_request", "hyserve_prefix_cache_hit_tokens_total",
                 "hyserve_preemptions_total", "hyserve_generation_tokens_per_second",
                 "hyserve_time_to_first_token_seconds_bucket", "hyserve_time_per_output_token_seconds_count"]:
        assert name in text, name
    vals = {l.split(" ")[0]: float(l.split(" ")[1]) for l in text.splitlines() if l and not l.startswith("#")}
    assert vals["hyserve_time_to_first_token_seconds_count"] >= 1
    assert vals["hyserve_generation_tokens_total"] >= 3


def test_api_key():
    s = Server("--api-key", "sekret")
    try:
        with pytest.raises(openai.AuthenticationError):
            s.client().models.list()
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").completions.create(model=MODEL_NAME, prompt="a", max_tokens=1)
        r = s.client(api_key="sekret").completions.create(model=MODEL_NAME, prompt="a", max_tokens=1)
        assert r.usage.completion_tokens == 1
        assert s.http.get("/health").status_code == 200  # health stays open
    finally:
        assert s.stop() == 0


# ---- concurrency, cancellation, shutdown ---------------------------------------------

def test_load_200_streams(server):
    """200 concurrent streaming requests; all answered in time; pool clean afterwards."""
    client = server.client()
    n, max_tokens = 200, 8

    def one(i):
        kw = dict(prompt=f"request {i}:", max_tokens=max_tokens, stream_options={"include_usage": True})
        if i % 2:
            kw.update(temperature=0.7, seed=i)
        chunks, text, finals = stream_completion(client, extra_body={"ignore_eos": True}, **kw)
        return finals, chunks[-1].usage.completion_tokens

    t0 = time.time()
    with cf.ThreadPoolExecutor(max_workers=n) as ex:
        results = list(ex.map(one, range(n), timeout=150))
    took = time.time() - t0
    assert len(results) == n
    assert all(f == ["length"] and k == max_tokens for f, k in results)
    assert took < 150
    h = server.wait_idle()
    assert h["pool_check"] == "ok", h
    assert h["pages_in_use"] == 0 and h["running"] == 0 and h["waiting"] == 0, h


def aborted(server):
    for line in server.http.get("/metrics").text.splitlines():
        if line.startswith('hyserve_request_success_total{finished_reason="abort"}'):
            return float(line.split()[-1])
    raise AssertionError("no abort counter")


def raw_stream(port, body):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    return s


def test_disconnect_mid_stream(server):
    a0 = aborted(server)
    socks = []
    for i in range(4):
        s = raw_stream(server.port, {"model": MODEL_NAME, "prompt": f"long {i}", "max_tokens": 480, "stream": True,
                                     "ignore_eos": True})
        got = b""
        while got.count(b"data: ") < 3:
            chunk = s.recv(65536)
            assert chunk, "stream ended early"
            got += chunk
        socks.append(s)
    assert server.health()["requests_in_flight"] >= 1
    for s in socks:
        s.close()
    h = server.wait_idle(timeout=20)
    assert h["pool_check"] == "ok" and h["pages_in_use"] == 0 and h["requests_in_flight"] == 0, h
    assert aborted(server) - a0 == 4  # cancelled, not run to the end


def test_disconnect_non_streaming(server):
    a0 = aborted(server)
    socks = []
    for i in range(3):
        s = raw_stream(server.port, {"model": MODEL_NAME, "prompt": f"wait {i}", "max_tokens": 480, "ignore_eos": True})
        socks.append(s)
    t0 = time.time()
    while server.health()["running"] + server.health()["waiting"] < 3 and time.time() - t0 < 10:
        time.sleep(0.05)
    for s in socks:
        s.close()
    h = server.wait_idle(timeout=20)
    assert h["pool_check"] == "ok" and h["pages_in_use"] == 0 and h["requests_in_flight"] == 0, h
    assert aborted(server) - a0 == 3


def test_shutdown_under_load():
    s = Server("--drain-timeout", "1")
    client = s.client()
    started = threading.Event()
    outcomes = []

    def one(i):
        try:
            for c in client.completions.create(model=MODEL_NAME, prompt=f"s{i}", max_tokens=400, stream=True,
                                               extra_body={"ignore_eos": True}):
                started.set()
                if c.choices and c.choices[0].finish_reason:
                    outcomes.append(c.choices[0].finish_reason)
        except Exception as e:  # the stream was cut off (openai or transport error)
            outcomes.append(type(e).__name__)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    assert started.wait(60)
    time.sleep(0.3)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    rc = s.proc.wait(20)
    took = time.time() - t0
    for t in threads:
        t.join(20)
    s.stop()
    assert rc == 0, "".join(s.log)
    assert took < 10, took
    assert len(outcomes) == 16  # every stream ended: finished, aborted or cut off
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()


def test_overlapped_server(client):
    """`--async-scheduling on` (overlapped steps; the cpu default is off): the same greedy
    text and logprobs as the module's server, the same stop, seeded draws the same,
    40 concurrent streams and 2 disconnects, then a clean pool."""
    srv = Server("--async-scheduling", "on")
    try:
        assert any("overlapped steps" in line for line in srv.log), "".join(srv.log)
        oc = srv.client()
        for prompt in ["Once upon a time", "The capital of France is"]:
            a = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=16, logprobs=2, **GREEDY)
            b = oc.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=16, logprobs=2, **GREEDY)
            assert b.choices[0].text == a.choices[0].text
            assert b.choices[0].logprobs.tokens == a.choices[0].logprobs.tokens
            for x, y in zip(a.choices[0].logprobs.token_logprobs, b.choices[0].logprobs.token_logprobs):
                assert abs(x - y) <= 1e-4
        ref = client.completions.create(model=MODEL_NAME, prompt="Stop here", max_tokens=24, **GREEDY).choices[0].text
        stop, want = pick_stop(ref)
        if stop is not None:
            r = oc.completions.create(model=MODEL_NAME, prompt="Stop here", max_tokens=24, stop=[stop], **GREEDY)
            assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
        kw = dict(prompt="Draw", max_tokens=10, temperature=0.8, seed=5)
        assert (oc.completions.create(model=MODEL_NAME, **kw).choices[0].text ==
                client.completions.create(model=MODEL_NAME, **kw).choices[0].text)

        def one(i):
            _, text, finals = stream_completion(oc, prompt=f"request {i}:", max_tokens=6, **GREEDY)
            return finals

        with cf.ThreadPoolExecutor(max_workers=40) as ex:
            assert all(f == ["length"] for f in ex.map(one, range(40), timeout=120))
        socks = [raw_stream(srv.port, {"model": MODEL_NAME, "prompt": f"long {i}", "max_tokens": 480, "stream": True,
                                       "ignore_eos": True}) for i in range(2)]
        for s in socks:
            got = b""
            while got.count(b"data: ") < 2:
                chunk = s.recv(65536)
                assert chunk, "stream ended early"
                got += chunk
            s.close()
        h = srv.wait_idle(timeout=20)
        assert h["pool_check"] == "ok" and h["pages_in_use"] == 0 and h["requests_in_flight"] == 0, h
    finally:
        srv.stop()
