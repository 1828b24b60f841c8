#!/usr/bin/env python3
"""bench_hf: the HF transformers peer for `hyserve bench`, on the same card in the same call.

Builds the text model of a shipped config (configs/<name>.json, e.g. qwen3.5-9b) with
random bf16 weights directly on the GPU (no checkpoint), then times greedy decode with
HF's cache: a prompt of --input-len random tokens, --output-len new tokens, at each
batch size given. Uses flash-linear-attention kernels when `fla` is importable (the
configuration gpu-anchors.md calls "with fla kernels"), else HF's torch fallback.
Prints decode tokens/s (batch * new tokens / decode time, prefill excluded) and the
time per decode step.
Usage: python3 tools/bench_hf.py --config configs/qwen3.5-9b.json [--batch 1,16] [--input-len 128] [--output-len 64]
"""
import argparse
import json
import time

import torch
import transformers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", default="1")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    a = ap.parse_args()
    cfg_json = json.load(open(a.config))
    cfg_json.pop("model_type", None)
    cfg = transformers.Qwen3_5TextConfig(**cfg_json)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.Qwen3_5ForCausalLM(cfg).to(torch.bfloat16).eval()
    try:
        import fla  # noqa: F401
        kern = "fla " + getattr(fla, "__version__", "?")
    except Exception:
        kern = "torch fallback"
    print(f"HF transformers {transformers.__version__}, torch {torch.__version__}, GDN kernels: {kern}, "
          f"{torch.cuda.get_device_name(0)}")
    for B in [int(x) for x in a.batch.split(",")]:
        ids = torch.randint(0, cfg.vocab_size, (B, a.input_len), device="cuda")
        gc = transformers.GenerationConfig(do_sample=False, max_new_tokens=a.output_len, min_new_tokens=a.output_len,
                                           eos_token_id=None, pad_token_id=0, use_cache=True)
        with torch.no_grad():
            model.generate(input_ids=ids[:, :8], generation_config=transformers.GenerationConfig(
                do_sample=False, max_new_tokens=4, eos_token_id=None, pad_token_id=0))  # warm-up
            torch.cuda.synchronize()
            t0 = time.time()
            out = model(input_ids=ids, use_cache=True)
            torch.cuda.synchronize()
            t_pre = time.time() - t0
            t0 = time.time()
            model.generate(input_ids=ids, generation_config=gc)
            torch.cuda.synchronize()
            t_all = time.time() - t0
        t_dec = max(t_all - t_pre, 1e-9)
        print(f"  batch {B:3d}: prefill {a.input_len} tokens {t_pre * 1e3:.1f} ms; decode {a.output_len} steps "
              f"{t_dec / a.output_len * 1e3:.2f} ms/step, {B * a.output_len / t_dec:.1f} tokens/s")
        del out


if __name__ == "__main__":
    main()
