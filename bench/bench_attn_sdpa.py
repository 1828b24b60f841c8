"""bench_attn_sdpa: PyTorch scaled_dot_product_attention on the shapes of bench_attn_prefill and
bench_attn_decode (GQA 16 q / 4 KV heads, D 256, bf16, contiguous tensors) as an anchor.
Run on the GPU machine: python3 bench/bench_attn_sdpa.py"""
import torch, torch.nn.functional as F
dev = "cuda"
def t(fn, n=10):
    fn(); torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b))
    ts.sort(); return ts[len(ts) // 2] * 1e3
print("torch", torch.__version__, torch.cuda.get_device_name())
for B, L in [(8, 1024), (1, 8192)]:
    q = torch.randn(B, 16, L, 256, device=dev, dtype=torch.bfloat16)
    k = torch.randn(B, 4, L, 256, device=dev, dtype=torch.bfloat16)
    v = torch.randn(B, 4, L, 256, device=dev, dtype=torch.bfloat16)
    us = t(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
    flop = 4 * 256 * 16 * B * L * (L + 1) / 2
    print(f"sdpa prefill {B} x {L}: {us:.1f} us, {flop / us / 1e6:.1f} TFLOP/s")
for B, L in [(1, 8192), (32, 8192), (128, 8192)]:
    nc = max(1, int(200e6 // (B * L * 4 * 256 * 2 * 2)) + 1)
    q = torch.randn(B, 16, 1, 256, device=dev, dtype=torch.bfloat16)
    ks = [torch.randn(B, 4, L, 256, device=dev, dtype=torch.bfloat16) for _ in range(nc)]
    vs = [torch.randn(B, 4, L, 256, device=dev, dtype=torch.bfloat16) for _ in range(nc)]
    i = [0]
    def f():
        j = i[0] % nc; i[0] += 1
        return F.scaled_dot_product_attention(q, ks[j], vs[j], enable_gqa=True)
    us = t(f, 20)
    print(f"sdpa decode {B} x {L}: {us:.1f} us, KV {B * L * 4 * 256 * 2 * 2 / us / 1e6:.2f} TB/s ({nc} rotating copies)")
    del ks, vs
