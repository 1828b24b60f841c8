#!/usr/bin/env python3
"""HF `tokenizers` encode speed on the same text as bench/bench_tok.c, one thread.

    build/bench/bench_tok --dump /tmp/tokbench.txt          # hyserve numbers + the text
    RAYON_NUM_THREADS=1 python3 tools/bench_tok_hf.py --text /tmp/tokbench.txt

Same modes as bench_tok: "whole" (one encode call on the whole text) and "docs" (one
call per paragraph, split at blank lines, each a batch of one), best of --reps runs,
plus the first call. RAYON_NUM_THREADS=1 is forced here before `tokenizers` is
imported, so the Rust side runs on one core (encode of a single string is serial
anyway; this also stops the batch paths from fanning out).
"""
import argparse
import os
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "tests/data/qwen3-tokenizer"))
    ap.add_argument("--text", required=True)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    import tokenizers
    tk = tokenizers.Tokenizer.from_file(os.path.join(a.tokenizer, "tokenizer.json"))
    text = open(a.text, "rb").read().decode("utf-8")
    nbytes = len(text.encode("utf-8"))
    print(f"tokenizers {tokenizers.__version__}, text {a.text}, {nbytes / 1e6:.2f} MB")
    best, first, ntok = 1e30, None, 0
    for _ in range(max(1, a.reps)):
        s = time.perf_counter()
        ntok = len(tk.encode(text, add_special_tokens=False).ids)
        e = time.perf_counter() - s
        first = e if first is None else first
        best = min(best, e)
    print(f"first: {nbytes / 1e6 / first:.2f} MB/s  (first call)")
    print(f"whole: {nbytes / 1e6 / best:.2f} MB/s  ({ntok} tokens, best of {a.reps}: {best:.3f} s)")
    docs, i = [], 0
    while i < len(text):
        j = text.find("\n\n", i)
        j = len(text) if j < 0 else j + 2
        docs.append(text[i:j])
        i = j
    best = 1e30
    for _ in range(max(1, a.reps)):
        s = time.perf_counter()
        for d in docs:
            tk.encode_batch([d], add_special_tokens=False)
        best = min(best, time.perf_counter() - s)
    print(f"docs:  {nbytes / 1e6 / best:.2f} MB/s  ({len(docs)} paragraphs, best of {a.reps}: {best:.3f} s)")


if __name__ == "__main__":
    main()
