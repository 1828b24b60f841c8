"""Fixtures for the end-to-end tests: start the real `hyserve serve` on loopback.

HYSERVE_BIN      the binary (scripts/test.sh sets it; default build/hyserve)
HYSERVE_E2E_MODEL a model directory to serve instead of the fixture (needs a tokenizer)

The fixture model is tests/fixtures/golden/qwen3_5 (tiny random HF-layout model) when it
ships its own tokenizer.json, else the tiny config tests/fixtures/tiny (vocabulary sized
for the Qwen3 tokenizer) with --load-format dummy (random weights) and the tokenizer in
tests/data/qwen3-tokenizer. Its output
is not meaningful text; the tests check protocol, accounting and robustness.
"""
import os
import re
import signal
import subprocess
import threading
import time

import http.client
import json
import urllib.parse

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("HYSERVE_BIN", os.path.join(ROOT, "build", "hyserve"))
MODEL_NAME = "tiny"


def model_args():
    env = os.environ.get("HYSERVE_E2E_MODEL")
    if env:
        return ["--model", env]
    golden = os.path.join(ROOT, "tests", "fixtures", "golden", "qwen3_5")
    if os.path.exists(os.path.join(golden, "config.json")) and os.path.exists(os.path.join(golden, "tokenizer.json")):
        return ["--model", golden]
    return ["--model", os.path.join(ROOT, "tests", "fixtures", "tiny"), "--load-format", "dummy",
            "--tokenizer", os.path.join(ROOT, "tests", "data", "qwen3-tokenizer")]


class Response:
    def __init__(self, status, headers, body):
        self.status_code = status
        self.headers = {k.lower(): v for k, v in headers}
        self.content = body
        self.text = body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


class Http:
    """Minimal HTTP/1.1 client on the standard library (one connection per call)."""

    def __init__(self, port, timeout=60):
        self.port = port
        self.timeout = timeout

    def request(self, method, path, params=None, json_body=None, content=None, headers=None):
        if params:
            path += "?" + urllib.parse.urlencode(params)
        headers = dict(headers or {})
        chunked = False
        if json_body is not None:
            content = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif content is not None and not isinstance(content, (bytes, bytearray)):
            chunked = True  # an iterable of bytes: chunked upload
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            c.request(method, path, body=content, headers=headers, encode_chunked=chunked)
            r = c.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            c.close()

    def get(self, path, params=None, **kw):
        return self.request("GET", path, params=params, **kw)

    def post(self, path, json=None, content=None, headers=None):
        return self.request("POST", path, json_body=json, content=content, headers=headers)


class Server:
    """One `hyserve serve` process on 127.0.0.1 and a free port (--port 0)."""

    def __init__(self, *extra, model=None, start_timeout=60):
        self.args = [BIN, "serve", *(model or model_args()), "--host", "127.0.0.1", "--port", "0",
                     "--served-model-name", MODEL_NAME, "--pool-mb", "256", *extra]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        self.port = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"listening on http://[^:]+:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        self.pump = threading.Thread(target=pump, daemon=True)
        self.pump.start()
        ready.wait(start_timeout)
        if self.port is None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log))
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = Http(self.port)

    def client(self, **kw):
        import openai
        kw.setdefault("api_key", "none")
        return openai.OpenAI(base_url=self.base + "/v1", max_retries=0, timeout=60, **kw)

    def health(self):
        return self.http.get("/health", params={"check": "1"}).json()

    def wait_idle(self, timeout=20):
        """Poll /health?check=1 until no request is in flight and no page is in use."""
        t0 = time.time()
        h = self.health()
        while time.time() - t0 < timeout:
            if h["running"] == 0 and h["waiting"] == 0 and h["pages_in_use"] == 0 and h["requests_in_flight"] == 0:
                return h
            time.sleep(0.1)
            h = self.health()
        return h

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pump.join(5)
        return self.proc.returncode


@pytest.fixture(scope="session")
def server():
    s = Server("--max-model-len", "512")
    yield s
    rc = s.stop()
    assert rc == 0, "".join(s.log)


@pytest.fixture(scope="session")
def client(server):
    return server.client()
