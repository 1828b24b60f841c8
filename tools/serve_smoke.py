"""serve_smoke: `hyserve serve` on a device (default cuda), with the standard library only
(no openai package needed, for machines that have none): completions, streaming, chat,
logprobs, stop strings, 200 concurrent streams, disconnects, pool check, metrics, SIGTERM
under load, and the golden fixtures of the four families (greedy agreement and logprob
error against HF float32 on the CPU; on a GPU, whose kernels need the released models'
head dims, the checks run on tests/fixtures/gpu-serve and the golden fixtures must be
refused with a clear error).

    HYSERVE_BIN=build/hyserve python3 tools/serve_smoke.py [cuda|cpu]

Run from the repository root; exits non-zero if a check fails.
"""
import json, os, signal, socket, sys, threading, time
import concurrent.futures as cf

ROOT = os.getcwd()
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
os.environ.setdefault("HYSERVE_BIN", os.path.join(ROOT, "build", "hyserve"))
DEVICE = sys.argv[1] if len(sys.argv) > 1 else "cuda"
try:  # conftest's fixtures need pytest, which a bare GPU image may lack; serve_smoke uses none of them
    import pytest  # noqa: F401
except ImportError:
    import types
    sys.modules["pytest"] = types.SimpleNamespace(fixture=lambda *a, **k: (lambda f: f))
from conftest import Server, MODEL_NAME  # noqa: E402

TOK = os.path.join(ROOT, "tests", "data", "qwen3-tokenizer")
# The tiny fixture's head dims (dk = 16, D = 32) are not served by the CUDA kernels (dk = dv = 128,
# D <= 256): on a GPU the same checks run on gpu-serve (real head dims, the tokenizer's vocabulary).
FIXTURE = "gpu-serve" if DEVICE == "cuda" else "tiny"
TINY = ["--model", os.path.join(ROOT, "tests", "fixtures", FIXTURE), "--load-format", "dummy", "--tokenizer", TOK,
        "--device", DEVICE]
fails = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        fails.append(what)


def sse(r):
    ev = [e for e in r.text.split("\n\n") if e]
    return ev, [json.loads(e[6:]) for e in ev if e != "data: [DONE]" and e.startswith("data: {")]


s = Server("--max-model-len", "1024", model=TINY)
print("".join(s.log), flush=True)
h = s.http
r = h.post("/v1/completions", json={"model": MODEL_NAME, "prompt": "Hello GPU", "max_tokens": 8, "ignore_eos": True,
                                    "temperature": 0})
j = r.json()
check(r.status_code == 200 and j["usage"]["completion_tokens"] == 8 and j["choices"][0]["finish_reason"] == "length",
      "completion " + r.text[:200])
ref = j["choices"][0]["text"]
r = h.post("/v1/completions", json={"model": MODEL_NAME, "prompt": "Hello GPU", "max_tokens": 8, "ignore_eos": True,
                                    "temperature": 0, "stream": True})
ev, chunks = sse(r)
check(ev[-1] == "data: [DONE]" and "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == ref,
      "stream = non-stream")
r = h.post("/v1/chat/completions", json={"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}],
                                         "max_tokens": 6, "stream": True, "logprobs": True, "top_logprobs": 2,
                                         "stream_options": {"include_usage": True}, "ignore_eos": True})
ev, chunks = sse(r)
check(chunks[0]["choices"][0]["delta"].get("role") == "assistant" and chunks[-1]["usage"]["completion_tokens"] == 6,
      "chat stream")
r = h.post("/v1/completions", json={"model": MODEL_NAME, "prompt": "Hello GPU", "max_tokens": 8, "logprobs": 3,
                                    "temperature": 0, "ignore_eos": True})
lp = r.json()["choices"][0]["logprobs"]
check(len(lp["tokens"]) == 8 and all(len(t) >= 1 for t in lp["top_logprobs"]), "logprobs")
k = next((k for k in range(1, len(ref) - 2) if ref[k:k + 2].strip() and ref.find(ref[k:k + 2]) == k), None)
if k:
    r = h.post("/v1/completions", json={"model": MODEL_NAME, "prompt": "Hello GPU", "max_tokens": 8, "stop": ref[k:k + 2],
                                        "temperature": 0, "ignore_eos": True})
    check(r.json()["choices"][0]["text"] == ref[:k] and r.json()["choices"][0]["finish_reason"] == "stop", "stop")


def one(i):
    r = h.post("/v1/completions", json={"model": MODEL_NAME, "prompt": f"req {i}", "max_tokens": 16, "stream": True,
                                        "ignore_eos": True, "temperature": 0.8, "seed": i})
    ev, chunks = sse(r)
    return ev[-1] == "data: [DONE]" and [c["choices"][0]["finish_reason"] for c in chunks
                                         if c["choices"] and c["choices"][0]["finish_reason"]] == ["length"]


t0 = time.time()
with cf.ThreadPoolExecutor(200) as ex:
    res = list(ex.map(one, range(200), timeout=300))
check(all(res), f"200 concurrent streams in {time.time() - t0:.2f} s")
socks = []
for i in range(4):
    sk = socket.create_connection(("127.0.0.1", s.port))
    body = json.dumps({"model": MODEL_NAME, "prompt": f"long {i}", "max_tokens": 900, "stream": True,
                       "ignore_eos": True}).encode()
    sk.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while got.count(b"data: ") < 3:
        got += sk.recv(65536)
    socks.append(sk)
for sk in socks:
    sk.close()
hh = s.wait_idle()
check(hh["pool_check"] == "ok" and hh["pages_in_use"] == 0, "idle after load + disconnects " + json.dumps(hh))
print("\n".join(l for l in h.get("/metrics").text.splitlines() if not l.startswith("#") and "bucket" not in l))
check(s.stop() == 0, "clean exit")

# shutdown under load
s = Server("--drain-timeout", "1", model=TINY)
outs = []


def longone(i):
    r = s.http.post("/v1/completions", json={"model": MODEL_NAME, "prompt": f"s{i}", "max_tokens": 3000,
                                              "stream": True, "ignore_eos": True})
    outs.append(r.text.endswith("data: [DONE]\n\n"))


ths = [threading.Thread(target=longone, args=(i,)) for i in range(16)]
for t in ths:
    t.start()
time.sleep(1.0)
t0 = time.time()
s.proc.send_signal(signal.SIGTERM)
rc = s.proc.wait(30)
for t in ths:
    t.join(30)
check(rc == 0 and time.time() - t0 < 10 and len(outs) == 16, f"SIGTERM under load: rc {rc}, {time.time() - t0:.2f} s, "
      f"{sum(outs)}/16 streams ended with [DONE]")

# golden fixtures (bf16 on a GPU): first tokens and logprobs vs HF float32. Their head dims are
# the tiny ones, which the CUDA backend refuses at start-up (a clear error, checked here instead).
for fam in ["qwen3_5", "qwen3_5_text", "qwen3_next", "qwen3_5_moe"]:
    if DEVICE == "cuda":
        import subprocess
        path = os.path.join(ROOT, "tests", "fixtures", "golden", fam)
        p = subprocess.run([os.environ["HYSERVE_BIN"], "serve", "--model", path, "--tokenizer", TOK, "--device", "cuda",
                            "--port", "0"], capture_output=True, text=True, timeout=120)
        check(p.returncode != 0 and "128" in p.stderr, f"golden {fam} refused on cuda with a clear error: "
              f"rc {p.returncode}, {p.stderr.strip().splitlines()[-1][:160] if p.stderr.strip() else ''}")
        continue
    path = os.path.join(ROOT, "tests", "fixtures", "golden", fam)
    g = json.load(open(os.path.join(path, "golden.json")))
    s = Server(model=["--model", path, "--tokenizer", TOK, "--device", DEVICE])
    worst, agree, total = 0.0, 0, 0
    for case in g["cases"]:
        r = s.http.post("/v1/completions", json={"model": MODEL_NAME, "prompt": case["prompt_ids"], "max_tokens": 16,
                                                  "temperature": 0, "logprobs": 1, "ignore_eos": True,
                                                  "return_tokens_as_token_ids": True}).json()
        lp = r["choices"][0]["logprobs"]
        for i, (w, m) in enumerate(zip(case["generated"], case["gen_margin"])):
            total += 1
            if lp["tokens"][i] != f"token_id:{w}":
                break
            agree += 1
            worst = max(worst, abs(lp["token_logprobs"][i] - case["gen_top5"][i][0]["logprob"]))
            if m < 1e-2:
                break
    check(s.stop() == 0 and agree >= 0.8 * total, f"golden {fam} on {DEVICE}: {agree}/{total} greedy tokens agree, "
          f"max |dlogprob| {worst:.4f}")
print("FAILS:", fails)
sys.exit(1 if fails else 0)
