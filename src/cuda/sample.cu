/*
 * sample.cu: bk->sample on the GPU (cuda_sample.h). One block of 1024 threads per row;
 * the row's 248k fp32 logits are read where lm_head wrote them and only the result
 * (token, logprob, top-K) comes back, instead of the whole row going to the host.
 *
 * Semantics are those of sample.h, draw included (sample_rng.h: the exponential race
 * over (seed, step, id), which an argmax computes in any visiting order). Candidates
 * rank by (logit desc, id asc); every filter keeps a prefix of that order, so a row
 * needs (1) the prefix that survives and (2) the best race score inside it.
 *
 *   stats    one pass: max, argmax (lowest id), log-sum-exp (fp32 terms, fp64 total).
 *   no filter (temperature only): one race pass over the row.
 *   filters  a value histogram of the row: 2048 bins of 1/64 of a unit of
 *            x = (max - v) / T (bin 2047 collects everything from x = 32 down, without
 *            atomics), with counts and, for top-p without top-k, fixed-point masses of
 *            w = exp(-x) (units of 2^-44, exact integer sums: no order dependence).
 *            The bins give a prefix bound: the first bin reaching k elements (top-k),
 *            reaching top_p * z (top-p), or past x = -log(min_p) (min-p). When the
 *            prefix up to that bin has at most 4096 elements (the usual case: top-k 50,
 *            top-p 0.9 of a peaked distribution) it is gathered into shared memory,
 *            sorted (bitonic, 64-bit keys (logit, id)) and filtered exactly as the CPU
 *            does (w in fp64, a block scan for the cumulative mass), then raced.
 *   generic  otherwise (flat distributions, huge k, exact ties over 4096 elements): radix
 *            select on the order-preserving key of the logit bits (11 + 11 + 10 bits,
 *            shared histograms; counts for top-k, fixed-point masses for top-p over the
 *            top-k survivors) gives the threshold key t and how many of the elements
 *            equal to t survive (the lowest ids: a block scan ranks them when needed);
 *            one race pass over the row with that predicate and min-p.
 *   top-K logprobs: the first K of the sorted prefix when the sampler gathered one,
 *            else the same histogram / gather (or radix select) with T = 1.
 * NaN logits count as -inf; -0 as +0.
 */
#include <cub/block/block_scan.cuh>
#include <float.h>
#include <limits.h>

#include "cuda_common.cuh"
#include "cuda_sample.h"
#include "sample_rng.h"

namespace {

constexpr int NT = 1024;                   /* threads per block (one block per row) */
constexpr int NW = NT / 32;
constexpr int NB = 2048;                   /* histogram bins */
constexpr int CAP = 4096;                  /* candidates gathered into shared memory at most */
constexpr int IPT = CAP / NT;              /* gathered candidates per thread */
constexpr float BPU = 64.f;                /* value bins per unit of (max - v) / T */
constexpr double FIX = 17592186044416.0;   /* 2^44: fixed-point unit of mass sums (w <= 1, V < 2^19) */
constexpr unsigned FULL = 0xffffffffu;

typedef unsigned long long ull;
typedef cub::BlockScan<double, NT> ScanD;
typedef cub::BlockScan<int, NT> ScanI;

struct Smem {
    uint32_t cnt[NB];
    ull mass[NB];
    ull keys[CAP]; /* gathered candidates: (~okey(v) << 32) | id, ascending = best first */
    union {
        typename ScanD::TempStorage d;
        typename ScanI::TempStorage i;
    } scan;
    double rd[NW];
    float rf[NW];
    int ri[NW];
    ull bu[2];
    int bi[4];
};

/* A logit as the sampler sees it: NaN -> -inf, -0 -> +0. */
__device__ __forceinline__ float canon(float v) {
    if (v != v) v = -INFINITY;
    return v == 0.f ? 0.f : v;
}
__device__ __forceinline__ float ld(const float *x, int i) { return canon(__ldg(x + i)); }
/* f(i, v) for every element of the row (v canonical): each thread takes 4 consecutive
 * elements per float4 load, two loads in flight (a lone block per SM must keep enough
 * bytes in flight to stream 1 MB quickly). Not uniform across threads. */
template <typename F>
__device__ __forceinline__ void row_each(const float *x, int V, F f) {
    if ((V & 3) == 0 && ((uintptr_t)x & 15) == 0) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        const int V4 = V >> 2;
        int j = threadIdx.x;
        for (; j + NT < V4; j += 2 * NT) {
            const float4 a = __ldg(x4 + j), b = __ldg(x4 + j + NT);
            f(4 * j, canon(a.x)), f(4 * j + 1, canon(a.y)), f(4 * j + 2, canon(a.z)), f(4 * j + 3, canon(a.w));
            const int k = 4 * (j + NT);
            f(k, canon(b.x)), f(k + 1, canon(b.y)), f(k + 2, canon(b.z)), f(k + 3, canon(b.w));
        }
        if (j < V4) {
            const float4 a = __ldg(x4 + j);
            f(4 * j, canon(a.x)), f(4 * j + 1, canon(a.y)), f(4 * j + 2, canon(a.z)), f(4 * j + 3, canon(a.w));
        }
    } else {
        for (int i = threadIdx.x; i < V; i += NT) f(i, canon(__ldg(x + i)));
    }
}
/* Order-preserving unsigned key of a float (larger value, larger key). */
__device__ __forceinline__ uint32_t okey(float v) {
    uint32_t u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float kval(uint32_t k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
/* Value bin: 0 holds the max; monotone non-increasing in v (ties share a bin). */
__device__ __forceinline__ int vbin(float v, float mx, float scale) {
    const float d = __fmul_rn(__fsub_rn(mx, v), scale);
    return d < (float)(NB - 1) ? (int)d : NB - 1;
}
__device__ __forceinline__ ull wfix(float v, float mx, double T) {
    return (ull)(exp(((double)v - (double)mx) / T) * FIX + 0.5);
}
__device__ __forceinline__ ull sort_key(float v, int i) { return ((ull)(~okey(v)) << 32) | (uint32_t)i; }
__device__ __forceinline__ float key_val(ull k) { return kval(~(uint32_t)(k >> 32)); }
__device__ __forceinline__ int key_id(ull k) { return (int)(uint32_t)k; }

/* Sum over the block, same order every time; every thread gets the total. */
__device__ double block_sum_d(double v, Smem &s) {
    const int l = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    if (l == 0) s.rd[w] = v;
    __syncthreads();
    v = l < NW ? s.rd[l] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    __syncthreads();
    return v;
}

/* Block argmax of (value, id): larger value, then lower id. Every thread gets the id. */
template <typename F, typename ARR>
__device__ int block_argmax(F v, int id, ARR *sv, Smem &s) {
    const int l = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const F ov = __shfl_xor_sync(FULL, v, o);
        const int oi = __shfl_xor_sync(FULL, id, o);
        if (ov > v || (ov == v && oi < id)) v = ov, id = oi;
    }
    if (l == 0) sv[w] = v, s.ri[w] = id;
    __syncthreads();
    v = l < NW ? sv[l] : (F)-INFINITY;
    id = l < NW ? s.ri[l] : INT_MAX;
    for (int o = 16; o > 0; o >>= 1) {
        const F ov = __shfl_xor_sync(FULL, v, o);
        const int oi = __shfl_xor_sync(FULL, id, o);
        if (ov > v || (ov == v && oi < id)) v = ov, id = oi;
    }
    __syncthreads();
    return id;
}

/* Over the first nb bins ranked r = 0.. (bin r, or nb-1-r when desc), the first rank
 * whose cumulative amount (counts, or masses when MASS) reaches target: *r (-1 when
 * the total stays below) and *before, the amount ranked before it (the total when
 * not reached). Ends with the block synchronised; bins are only read. */
template <bool MASS>
__device__ void find_first(Smem &s, int nb, bool desc, ull target, int *r_out, ull *before_out) {
    if (threadIdx.x < 32) {
        const int lane = threadIdx.x, per = nb / 32;
        ull loc = 0;
        for (int j = 0; j < per; j++) {
            const int r = lane * per + j, b = desc ? nb - 1 - r : r;
            loc += MASS ? s.mass[b] : (ull)s.cnt[b];
        }
        ull inc = loc;
        for (int o = 1; o < 32; o <<= 1) {
            const ull t = __shfl_up_sync(FULL, inc, o);
            if (lane >= o) inc += t;
        }
        const ull total = __shfl_sync(FULL, inc, 31);
        const unsigned bal = __ballot_sync(FULL, inc >= target);
        if (bal == 0) {
            if (lane == 0) s.bi[0] = -1, s.bu[0] = total;
        } else if (lane == __ffs(bal) - 1) {
            ull acc = inc - loc;
            for (int j = 0; j < per; j++) {
                const int r = lane * per + j, b = desc ? nb - 1 - r : r;
                const ull v = MASS ? s.mass[b] : (ull)s.cnt[b];
                if (acc + v >= target) {
                    s.bi[0] = r, s.bu[0] = acc;
                    break;
                }
                acc += v;
            }
        }
    }
    __syncthreads();
    *r_out = s.bi[0];
    *before_out = s.bu[0];
    __syncthreads();
}

/* Value histogram of the row (bins 0..NB-2; NB-1 is not counted). MASS: also the
 * fixed-point masses, and the row's z = sum of w (fp64, fp32 terms past the last bin)
 * is returned. */
template <bool MASS>
__device__ double xhist(const float *x, int V, float mx, float scale, double T, Smem &s) {
    for (int i = threadIdx.x; i < NB; i += NT) {
        s.cnt[i] = 0;
        if (MASS) s.mass[i] = 0;
    }
    __syncthreads();
    double z = 0;
    row_each(x, V, [&](int, float v) {
        const int b = vbin(v, mx, scale);
        if (b < NB - 1) {
            atomicAdd(&s.cnt[b], 1u);
            if (MASS) {
                const double w = exp(((double)v - (double)mx) / T);
                z += w;
                atomicAdd(&s.mass[b], (ull)(w * FIX + 0.5));
            }
        } else if (MASS) {
            z += (double)expf((float)(((double)v - (double)mx) / T));
        }
    });
    if (MASS) return block_sum_d(z, s); /* synchronises */
    __syncthreads();
    return 0;
}

/* Elements counted in bins 0..b (a sum of counts; b = NB-1 means the whole row). */
__device__ int prefix_count(int V, int b, Smem &s) {
    if (b >= NB - 1) return V;
    double c = 0;
    for (int i = threadIdx.x; i <= b; i += NT) c += s.cnt[i];
    return (int)block_sum_d(c, s);
}

__device__ void bitonic(ull *a, int P) {
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < P; i += NT) {
                const int l = i ^ j;
                if (l > i) {
                    const ull x = a[i], y = a[l];
                    if ((x > y) == ((i & k) == 0)) a[i] = y, a[l] = x;
                }
            }
            __syncthreads();
        }
}

/* Sort keys[0..L) ascending (best first). */
__device__ void sort_keys(int L, Smem &s) {
    int P = 1;
    while (P < L) P <<= 1;
    for (int i = L + threadIdx.x; i < P; i += NT) s.keys[i] = ~0ull;
    __syncthreads();
    bitonic(s.keys, P);
}

/* Gather the elements of bins 0..b (at most CAP: the caller checked) into keys, sorted;
 * returns how many. This set is a prefix of the order (logit desc, id asc). */
__device__ int gather_sorted(const float *x, int V, float mx, float scale, int b, Smem &s) {
    if (threadIdx.x == 0) s.bi[1] = 0;
    __syncthreads();
    row_each(x, V, [&](int i, float v) {
        if (vbin(v, mx, scale) <= b) {
            const int slot = atomicAdd(&s.bi[1], 1);
            if (slot < CAP) s.keys[slot] = sort_key(v, i);
        }
    });
    __syncthreads();
    const int L = min(s.bi[1], CAP);
    __syncthreads();
    sort_keys(L, s);
    return L;
}

/* Radix select over the keys of the elements in the set (all, or when rs: keys > rk
 * plus rm of the elements equal to rk), in the order key desc: the key t where the
 * cumulative amount first reaches the target (count k, or MASS: frac of the set's
 * fixed-point mass), *m = how many elements equal to t are needed (>= 1) and *cnt the
 * number of elements equal to t in the set. */
template <bool MASS>
__device__ void radix_select(const float *x, int V, float mx, double T, bool rs, uint32_t rk, int rm, int k,
                             float frac, Smem &s, uint32_t *t_out, int *m_out, int *cnt_out) {
    const int lane = threadIdx.x & 31;
    const int shifts[3] = {21, 10, 0}, bits[3] = {11, 11, 10};
    uint32_t prefix = 0, mask = 0;
    ull above = 0, target = (ull)k;
    int cnt_t = 0;
    for (int lv = 0; lv < 3; lv++) {
        const int nb = 1 << bits[lv], sh = shifts[lv];
        for (int i = threadIdx.x; i < nb; i += NT) s.cnt[i] = 0, s.mass[i] = 0;
        __syncthreads();
        for (int base = 0; base < V; base += NT) {
            const int i = base + threadIdx.x;
            int d = -1;
            ull wf = 0;
            if (i < V) {
                const float v = ld(x, i);
                const uint32_t kk = okey(v);
                if ((!rs || kk > rk) && (kk & mask) == prefix) {
                    d = (int)((kk >> sh) & (uint32_t)(nb - 1));
                    if (MASS) wf = wfix(v, mx, T);
                }
            }
            const unsigned peers = __match_any_sync(FULL, d);
            if (d >= 0) {
                if (MASS) atomicAdd(&s.mass[d], wf);
                if (lane == __ffs(peers) - 1) atomicAdd(&s.cnt[d], (uint32_t)__popc(peers));
            }
        }
        if (rs && rm > 0 && threadIdx.x == 0 && (rk & mask) == prefix) {
            const int d = (int)((rk >> sh) & (uint32_t)(nb - 1));
            atomicAdd(&s.cnt[d], (uint32_t)rm);
            if (MASS) atomicAdd(&s.mass[d], (ull)rm * wfix(kval(rk), mx, T));
        }
        __syncthreads();
        int r;
        ull before;
        if (MASS && lv == 0) {
            find_first<MASS>(s, nb, true, ~0ull, &r, &before); /* the set's total mass */
            target = (ull)ceil((double)frac * (double)before);
            if (target == 0) target = 1;
        }
        find_first<MASS>(s, nb, true, target - above, &r, &before);
        if (r < 0) find_first<MASS>(s, nb, true, before, &r, &before); /* rounding: the last non-empty bin */
        const int d = nb - 1 - r;
        prefix |= (uint32_t)d << sh;
        mask |= (uint32_t)(nb - 1) << sh;
        above += before;
        cnt_t = (int)s.cnt[d];
        __syncthreads();
    }
    int m;
    if (MASS) {
        const ull wt = wfix(kval(prefix), mx, T);
        m = wt > 0 && target > above ? (int)min((ull)cnt_t, (target - above + wt - 1) / wt) : cnt_t;
    } else {
        m = (int)(target - above);
    }
    *t_out = prefix;
    *m_out = max(1, min(m, cnt_t));
    *cnt_out = cnt_t;
}

/* One pass over the row in index order, calling f(i, v) for the elements of the prefix
 * {key > t} + the first m (lowest ids) of {key == t} (every element when !has_t).
 * The elements equal to t are ranked with a block scan only when need_rank. */
template <typename F>
__device__ void for_prefix(const float *x, int V, bool has_t, uint32_t t, int m, bool need_rank, Smem &s, F f) {
    if (!need_rank) {
        row_each(x, V, [&](int i, float v) {
            if (!has_t || okey(v) >= t) f(i, v);
        });
        return;
    }
    int run = 0;
    for (int base = 0; base < V; base += NT) {
        const int i = base + threadIdx.x;
        const bool valid = i < V;
        const float v = valid ? ld(x, i) : 0.f;
        const uint32_t kk = okey(v);
        bool in = valid && (!has_t || kk > t);
        const bool tie = valid && has_t && kk == t;
        if (need_rank) {
            int rank, agg;
            ScanI(s.scan.i).ExclusiveSum(tie ? 1 : 0, rank, agg);
            __syncthreads();
            if (tie && run + rank < m) in = true;
            run += agg;
        } else if (tie) {
            in = true;
        }
        if (in) f(i, v);
    }
}

/* Sampling over the sorted prefix keys[0..L) (holds every survivor). */
__device__ int sample_sorted(int L, const bk_sample_row_t &p, bool topk, bool topp, bool minp, float mx, double T,
                             double z_all, uint64_t key, Smem &s) {
    int n = L;
    if (topk && p.top_k < n) n = p.top_k;
    double w[IPT];
#pragma unroll
    for (int q = 0; q < IPT; q++) {
        const int j = threadIdx.x * IPT + q;
        w[q] = j < n ? exp(((double)key_val(s.keys[j]) - (double)mx) / T) : 0.0;
    }
    int keep = n;
    if (topp || minp) {
        if (threadIdx.x == 0) s.bi[2] = n, s.bi[3] = n;
        __syncthreads();
        if (minp) {
#pragma unroll
            for (int q = 0; q < IPT; q++) {
                const int j = threadIdx.x * IPT + q;
                if (j < n && w[q] < (double)p.min_p) atomicMin(&s.bi[2], j);
            }
        }
        if (topp) {
            double cum[IPT], agg;
            ScanD(s.scan.d).InclusiveSum(w, cum, agg);
            const double target = (double)p.top_p * (topk ? agg : z_all);
#pragma unroll
            for (int q = 0; q < IPT; q++) {
                const int j = threadIdx.x * IPT + q;
                if (j < n && cum[q] >= target) atomicMin(&s.bi[3], j + 1);
            }
        }
        __syncthreads();
        keep = max(1, min(s.bi[2], s.bi[3]));
        __syncthreads();
    }
    double best = -INFINITY;
    int bid = INT_MAX;
#pragma unroll
    for (int q = 0; q < IPT; q++) {
        const int j = threadIdx.x * IPT + q;
        if (j < keep) {
            const ull kj = s.keys[j];
            const int id = key_id(kj);
            const double sc = smp_race_score(((double)key_val(kj) - (double)mx) / T, key, id);
            if (sc > best || (sc == best && id < bid)) best = sc, bid = id;
        }
    }
    return block_argmax(best, bid, s.rd, s);
}

/* The token of a row with temperature > 0 and a finite max. *L: the length of the
 * sorted prefix left in keys (0 when none). */
__device__ int sample_row(const float *x, int V, const bk_sample_row_t &p, float mx, Smem &s, int *L) {
    const double T = p.temperature;
    const uint64_t key = smp_draw_key(p.seed, p.step);
    const bool topk = p.top_k > 0 && p.top_k < V, topp = p.top_p < 1.f, minp = p.min_p > 0.f;
    bool has_t = false;
    uint32_t t = 0;
    int m = 0, cnt_all = 0;
    *L = 0;
    if (topk || topp || minp) {
        const float scale = BPU / p.temperature;
        const bool mass = topp && !topk;
        const double z_all = mass ? xhist<true>(x, V, mx, scale, T, s) : xhist<false>(x, V, mx, scale, T, s);
        int bstar = NB - 1, r;
        ull before;
        if (topk) {
            find_first<false>(s, NB, false, (ull)p.top_k, &r, &before);
            if (r >= 0) bstar = r;
        }
        if (!(topk && topp)) { /* top-p over top-k needs every top-k survivor for its z */
            if (topp) {
                const ull tgt = (ull)((double)p.top_p * z_all * FIX) + (ull)V;
                find_first<true>(s, NB, false, tgt, &r, &before);
                if (r >= 0) bstar = min(bstar, r);
            }
            if (minp) bstar = min(bstar, (int)fmin(-log((double)p.min_p) * BPU, (double)(NB - 2)) + 1);
        }
        if (prefix_count(V, bstar, s) <= CAP) {
            *L = gather_sorted(x, V, mx, scale, bstar, s);
            return sample_sorted(*L, p, topk, topp, minp, mx, T, z_all, key, s);
        }
        /* generic: thresholds by radix select */
        uint32_t tk = 0;
        int mk = 0, ck = 0;
        if (topk) {
            radix_select<false>(x, V, mx, T, false, 0, 0, p.top_k, 0.f, s, &tk, &mk, &ck);
            has_t = true, t = tk, m = mk, cnt_all = ck;
        }
        if (topp) {
            uint32_t tp;
            int mp, cp;
            radix_select<true>(x, V, mx, T, topk, tk, mk, 0, p.top_p, s, &tp, &mp, &cp);
            cnt_all = topk && tp == tk ? ck : cp;
            has_t = true, t = tp, m = mp;
        }
    }
    double best = -INFINITY;
    int bid = INT_MAX;
    const double lmin = minp ? (double)p.min_p : 0.0;
    for_prefix(x, V, has_t, t, m, has_t && m < cnt_all, s, [&](int i, float v) {
        const double xx = ((double)v - (double)mx) / T;
        if (minp && exp(xx) < lmin) return;
        const double sc = smp_race_score(xx, key, i);
        if (sc > best || (sc == best && i < bid)) best = sc, bid = i;
    });
    return block_argmax(best, bid, s.rd, s);
}

/* keys[0..K) = the K best of the row, sorted (K <= HS_MAX_TOP_LOGPROBS <= V). */
__device__ void top_k_sorted(const float *x, int V, int K, float mx, Smem &s) {
    if (isfinite(mx)) {
        xhist<false>(x, V, mx, BPU, 1.0, s);
        int r;
        ull before;
        find_first<false>(s, NB, false, (ull)K, &r, &before);
        if (r >= 0 && prefix_count(V, r, s) <= CAP) {
            gather_sorted(x, V, mx, BPU, r, s);
            return;
        }
    }
    uint32_t t;
    int m, c;
    radix_select<false>(x, V, mx, 1.0, false, 0, 0, K, 0.f, s, &t, &m, &c);
    if (threadIdx.x == 0) s.bi[1] = 0;
    __syncthreads();
    for_prefix(x, V, true, t, m, m < c, s, [&](int i, float v) {
        const int slot = atomicAdd(&s.bi[1], 1);
        if (slot < CAP) s.keys[slot] = sort_key(v, i);
    });
    __syncthreads();
    const int L = min(s.bi[1], CAP);
    __syncthreads();
    sort_keys(L, s);
}

__global__ void __launch_bounds__(NT) k_sample(const float *logits, int V, const bk_sample_row_t *rows,
                                               bk_sample_out_t *out, int32_t *tok_out) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    Smem &s = *reinterpret_cast<Smem *>(smem_raw);
    const bk_sample_row_t p = rows[blockIdx.x];
    const float *x = logits + (size_t)p.row * (size_t)V;

    /* max, argmax (lowest id), sum of exp(v - max) */
    float m = -INFINITY, acc = 0.f;
    int am = INT_MAX;
    row_each(x, V, [&](int i, float v) {
        if (v > m || (v == m && i < am)) {
            acc = m == -INFINITY ? 1.f : acc * __expf(m - v) + 1.f;
            m = v, am = i;
        } else if (v > -INFINITY) {
            acc += __expf(v - m);
        }
    });
    int amax = block_argmax(m, am, s.rf, s);
    if (amax == INT_MAX) amax = 0;
    const float mx = ld(x, amax);
    const double sum = block_sum_d(m > -INFINITY ? (double)acc * exp((double)m - (double)mx) : 0.0, s);
    const float lse = mx + (float)log(sum);

    int tok = amax, L = 0;
    if (p.temperature > 0.f && isfinite(mx)) tok = sample_row(x, V, p, mx, s, &L);
    const int K = min(p.n_top, V);
    if (K > 0 && L < K) top_k_sorted(x, V, K, mx, s);
    bk_sample_out_t *o = &out[blockIdx.x];
    if (threadIdx.x < K) {
        const ull kj = s.keys[threadIdx.x];
        o->top_ids[threadIdx.x] = key_id(kj);
        o->top_logprobs[threadIdx.x] = __ldg(x + key_id(kj)) - lse;
    }
    if (threadIdx.x == 0) {
        if (tok_out) tok_out[p.row] = tok;
        o->token = tok;
        o->logprob = __ldg(x + tok) - lse;
        o->n_top = K;
    }
}

} /* namespace */

extern "C" size_t sample_ws_bytes(int n) {
    const size_t a = ((size_t)n * sizeof(bk_sample_row_t) + 255) & ~(size_t)255;
    return a + (size_t)n * sizeof(bk_sample_out_t) + 256;
}

extern "C" int sample_queue(const float *logits, int V, const bk_sample_row_t *rows, int n, bk_sample_out_t *out,
                            void *d_ws, int32_t *tok_out, void *stream) {
    if (n < 0 || V < 1 || V >= SAMPLE_MAX_VOCAB || (n > 0 && (!logits || !rows || !out || !d_ws))) {
        fprintf(stderr, "hyserve: sample_run: bad sizes (n %d, V %d)\n", n, V);
        return HS_ERR_INVALID;
    }
    for (int i = 0; i < n; i++) {
        const bk_sample_row_t *q = &rows[i];
        if (q->row < 0 || !(q->temperature >= 0) || q->top_k < 0 || !(q->top_p > 0 && q->top_p <= 1) ||
            !(q->min_p >= 0 && q->min_p < 1) || q->n_top < 0 || q->n_top > HS_MAX_TOP_LOGPROBS) {
            fprintf(stderr, "hyserve: sample_run: bad parameters in row %d\n", i);
            return HS_ERR_INVALID;
        }
    }
    if (n == 0) return HS_OK;
    cudaStream_t st = (cudaStream_t)stream;
    bk_sample_row_t *d_rows = (bk_sample_row_t *)d_ws;
    bk_sample_out_t *d_out =
        (bk_sample_out_t *)((char *)d_ws + (((size_t)n * sizeof(bk_sample_row_t) + 255) & ~(size_t)255));
    HS_CUDA_TRY(cudaFuncSetAttribute(k_sample, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sizeof(Smem)));
    HS_CUDA_TRY(cudaMemcpyAsync(d_rows, rows, (size_t)n * sizeof *rows, cudaMemcpyHostToDevice, st));
    k_sample<<<n, NT, sizeof(Smem), st>>>(logits, V, d_rows, d_out, tok_out);
    HS_CUDA_LAUNCHED();
    HS_CUDA_TRY(cudaMemcpyAsync(out, d_out, (size_t)n * sizeof *out, cudaMemcpyDeviceToHost, st));
    return HS_OK;
}

extern "C" int sample_run(const float *logits, int V, const bk_sample_row_t *rows, int n, bk_sample_out_t *out,
                          void *d_ws, void *stream) {
    const int rc = sample_queue(logits, V, rows, n, out, d_ws, NULL, stream);
    if (rc != HS_OK) return rc;
    HS_CUDA_TRY(cudaStreamSynchronize((cudaStream_t)stream));
    return HS_OK;
}
