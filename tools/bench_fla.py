#!/usr/bin/env python3
"""bench_fla: the peer figures for bench/bench_gdn_*.cu, on the same card in the same call.

Times flash-linear-attention's fused_recurrent_gated_delta_rule (decode, T = 1 per
sequence: Hk/Hv 16/16, 16/32, 16/64 x batch 1..512 x fp32/bf16 initial state, fp32
final state, l2norm in kernel) and chunk_gated_delta_rule (Hv 32/64; one sequence of
T 4k/16k/64k and varlen steps of 4096 tokens: 4 x 1024, 5 uneven; fp32 initial and final state), and a torch device-to-device copy.
Method as the CUDA benchmarks: decode over rotating input copies (> 4x L2) captured
in a CUDA graph, median of 15 replays / launches; chunk: one call captured in a CUDA
graph, median of 10 replays.
Effective decode bandwidth = state read (its dtype) + fp32 state write (model-spec §8.1).
Usage: python3 tools/bench_fla.py [decode|chunk|all] [Hv ...]  (chunk rows of these Hv only)
"""
import sys
import torch
import torch.nn.functional as F

def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]

def copy_bw():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda").fill_(1)
    b = torch.empty_like(a)
    ts = []
    for i in range(12):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); b.copy_(a); e1.record(); e1.synchronize()
        if i >= 2:
            ts.append(e0.elapsed_time(e1))
    return 2 * n / (med(ts) * 1e-3) / 1e12

def bench_decode():
    from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    print("fla fused_recurrent_gated_delta_rule (T=1)")
    print("%-6s %-5s %5s %10s %10s" % ("Hk/Hv", "state", "B", "us", "TB/s"))
    Hk, K = 16, 128
    for Hv in (16, 32, 64):
        for sdt in (torch.float32, torch.bfloat16):
            for B in (1, 8, 32, 128, 512):
                st_bytes = B * Hv * K * K * sdt.itemsize
                copies = max(1, min(64, 4 * l2 // (st_bytes + 4 * B * Hv * K * K) + 1))
                sets = []
                for c in range(copies):
                    q = torch.randn(B, 1, Hk, K, device="cuda", dtype=torch.bfloat16)
                    k = torch.randn(B, 1, Hk, K, device="cuda", dtype=torch.bfloat16)
                    v = torch.randn(B, 1, Hv, K, device="cuda", dtype=torch.bfloat16)
                    g = F.logsigmoid(torch.randn(B, 1, Hv, device="cuda", dtype=torch.float32))
                    beta = torch.rand(B, 1, Hv, device="cuda", dtype=torch.float32).sigmoid()
                    h0 = (0.1 * torch.randn(B, Hv, K, K, device="cuda")).to(sdt)
                    sets.append((q, k, v, g, beta, h0))
                def step(s):
                    q, k, v, g, beta, h0 = s
                    return fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, initial_state=h0,
                                                            output_final_state=True, use_qk_l2norm_in_kernel=True)
                for s in sets:
                    step(s)
                torch.cuda.synchronize()
                per = copies if copies >= 20 else (20 // copies + 1) * copies
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for s in sets:
                        step(s)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    for i in range(per):
                        step(sets[i % copies])
                graph.replay()
                ts = []
                for _ in range(15):
                    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    e0.record(); graph.replay(); e1.record(); e1.synchronize()
                    ts.append(e0.elapsed_time(e1))
                us = med(ts) * 1e3 / per
                byt = B * Hv * K * K * (sdt.itemsize + 4)
                print("%2d/%-3d %-5s %5d %10.2f %10.3f" % (Hk, Hv, "f32" if sdt == torch.float32 else "bf16", B, us,
                                                         byt / (us * 1e-6) / 1e12), flush=True)
                del sets, graph

def bench_chunk(hvs=(32, 64)):
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    print("fla chunk_gated_delta_rule (fp32 h0 and final state per sequence; varlen by cu_seqlens)")
    print("%-6s %-9s %7s %10s %12s" % ("Hk/Hv", "seqs", "T", "ms", "Mtok/s"))
    Hk, K = 16, 128
    # the rows of bench/bench_gdn_prefill.cu: one sequence of T, then two varlen steps
    rows = [("1", [4096]), ("1", [16384]), ("1", [65536]), ("4x1024", [1024] * 4),
            ("5 uneven", [1000, 700, 1200, 900, 296])]
    for Hv in hvs:
        for label, lens in rows:
            T, N = sum(lens), len(lens)
            q = torch.randn(1, T, Hk, K, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(1, T, Hk, K, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(1, T, Hv, K, device="cuda", dtype=torch.bfloat16)
            g = F.logsigmoid(torch.randn(1, T, Hv, device="cuda", dtype=torch.float32))
            beta = torch.rand(1, T, Hv, device="cuda", dtype=torch.float32).sigmoid()
            h0 = 0.1 * torch.randn(N, Hv, K, K, device="cuda")
            cu = None
            if N > 1:
                cu = torch.tensor([0] + [sum(lens[:i + 1]) for i in range(N)], device="cuda", dtype=torch.long)
            f = lambda: chunk_gated_delta_rule(q, k, v, g=g, beta=beta, initial_state=h0, output_final_state=True,
                                               use_qk_l2norm_in_kernel=True, cu_seqlens=cu)
            for _ in range(3):
                f()
            torch.cuda.synchronize()
            # CUDA-graph replay, as model-spec §8.1 measured it (no Python launch gaps)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                f()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                f()
            graph.replay()
            ts = []
            for _ in range(10):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record(); graph.replay(); e1.record(); e1.synchronize()
                ts.append(e0.elapsed_time(e1))
            ms = med(ts)
            del graph
            print("%2d/%-3d %-9s %7d %10.3f %12.2f" % (Hk, Hv, label, T, ms, T / (ms * 1e-3) / 1e6), flush=True)

if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    print("device: %s" % torch.cuda.get_device_name(0))
    print("torch copy: %.3f TB/s (read + write)" % copy_bw())
    if what in ("decode", "all"):
        bench_decode()
    if what in ("chunk", "all"):
        bench_chunk(tuple(int(x) for x in sys.argv[2:]) or (32, 64))
