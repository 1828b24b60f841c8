/*
 * Unit tests for memplan: every formula on several models and TP degrees, with the
 * expected values worked out by hand in the comments (sources: seed-system §4.3 for
 * the ATOM numbers, model-spec §4.2 for the per-request state table), then the CLI
 * (`hyserve plan`, run through HYSERVE_BIN) in table and --json form.
 *
 * Notation in the comments: n_attn full-attention rows, kvh KV heads per rank, D = 256,
 * bs = block size, cd = conv_dim / tp, hv = Hv / tp, dk = dv = 128.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "memplan.h"

static mcfg_t load(const char *name) {
    mcfg_t c;
    char err[512];
    if (mcfg_load(name, &c, err, sizeof err) != HS_OK) fail_msg("%s", err);
    return c;
}

static size_t kv_block(const char *model, int tp, int bs, hs_dtype_t t, int mtp) {
    mcfg_t c = load(model);
    kv_layout_t kv;
    mem_kv_init(&kv, &c, tp, bs, t, mtp);
    return kv.kv_bytes;
}

static mem_state_t state(const char *model, int tp, hs_dtype_t ssm, int mtp) {
    mcfg_t c = load(model);
    mem_state_t s;
    mem_state_init(&s, &c, tp, ssm, mtp);
    return s;
}

/* ---- KV block ------------------------------------------------------------------- */
static void test_kv_block(void **st) {
    (void)st;
    /* 397B tp4 fp8 (seed §4.3): Hkv 2 < 4 -> kvh 1 (replicated), n_attn 15.
     *   K+V   2*15*16*1*256*1 = 122,880;  scales 15*2*16*1*4 = 1,920;  block 124,800. */
    assert_int_equal(kv_block("qwen3.5-397b-a17b", 4, 16, HS_F8_E4M3, 0), 124800);
    /* same, block 32: linear in bs -> 249,600; block 1 -> 7,800 (the per-token bytes) */
    assert_int_equal(kv_block("qwen3.5-397b-a17b", 4, 32, HS_F8_E4M3, 0), 249600);
    assert_int_equal(kv_block("qwen3.5-397b-a17b", 4, 1, HS_F8_E4M3, 0), 7800);
    /* with MTP the draft layer adds a row: 16 rows -> 2*16*16*256 + 16*2*16*4 = 131,072 + 2,048 = 133,120 */
    assert_int_equal(kv_block("qwen3.5-397b-a17b", 4, 16, HS_F8_E4M3, 1), 133120);
    /* tp8: still kvh 1 -> no change past tp2 */
    assert_int_equal(kv_block("qwen3.5-397b-a17b", 8, 16, HS_F8_E4M3, 0), 124800);
    /* Qwen3-Next tp8 fp8 (seed §4.3): kvh 1, n_attn 12: 2*12*16*256 = 98,304 + 12*2*16*4 = 1,536 -> 99,840 */
    assert_int_equal(kv_block("qwen3-next-80b-a3b", 8, 16, HS_F8_E4M3, 0), 99840);
    /* 9B tp1 bf16: kvh 4, n_attn 8: per token 8*2*4*256*2 = 32,768 (32 KiB, model-spec §4.2); block 524,288 */
    assert_int_equal(kv_block("qwen3.5-9b", 1, 16, HS_BF16, 0), 524288);
    assert_int_equal(kv_block("qwen3.5-9b", 1, 1, HS_BF16, 0), 32768);
    /* 9B tp2 bf16: kvh 2 -> 16,384 per token, 262,144 per block */
    assert_int_equal(kv_block("qwen3.5-9b", 2, 16, HS_BF16, 0), 262144);
    /* 27B tp1 bf16: kvh 4, n_attn 16: 16*2*4*256*2 = 65,536 per token (64 KiB, model-spec §4.2) */
    assert_int_equal(kv_block("qwen3.5-27b", 1, 1, HS_BF16, 0), 65536);
    /* 27B tp2 bf16: kvh 2 -> 32,768 per token */
    assert_int_equal(kv_block("qwen3.5-27b", 2, 1, HS_BF16, 0), 32768);
    /* 27B tp8 fp8: Hkv 4 < 8 -> kvh 1: 2*16*16*256 = 131,072 + 16*2*16*4 = 2,048 -> 133,120 */
    assert_int_equal(kv_block("qwen3.5-27b", 8, 16, HS_F8_E4M3, 0), 133120);
    /* 2B tp4 bf16: kvh 1 (Hkv 2 < 4), n_attn 6: 6*2*1*256*2 = 6,144 per token, 98,304 per block */
    assert_int_equal(kv_block("qwen3.5-2b", 4, 16, HS_BF16, 0), 98304);
    mcfg_t c = load("qwen3.5-27b");
    assert_int_equal(mem_kv_heads(&c, 1), 4);
    assert_int_equal(mem_kv_heads(&c, 2), 2);
    assert_int_equal(mem_kv_heads(&c, 4), 1);
    assert_int_equal(mem_kv_heads(&c, 8), 1);
}

/* ---- recurrent state -------------------------------------------------------------- */
static void test_state(void **st) {
    (void)st;
    /* 397B tp4 bf16 (seed §4.3): conv_dim = 128*16*2 + 128*64 = 12,288, cd = 3,072;
     *   conv 3*3072*2 = 18,432; SSM hv 16: 16*128*128*2 = 524,288; per layer 542,720;
     *   x 45 GDN layers = 24,422,400 (23.291 MiB). */
    mem_state_t s = state("qwen3.5-397b-a17b", 4, HS_BF16, 0);
    assert_int_equal(s.conv_layer_bytes, 18432);
    assert_int_equal(s.ssm_layer_bytes, 524288);
    assert_int_equal(s.slot_bytes, 24422400);
    assert_int_equal(s.req_bytes, 24422400);
    /* MTP k=1: conv window 4: 4*3072*2 = 24,576 + 524,288 = 548,864 x 45 = 24,698,880 per slot
     * (seed §4.3 table), 2 slots per request = 49,397,760 */
    s = state("qwen3.5-397b-a17b", 4, HS_BF16, 1);
    assert_int_equal(s.slot_bytes, 24698880);
    assert_int_equal(s.copies, 2);
    assert_int_equal(s.req_bytes, 49397760);
    /* k=3: 6*3072*2 = 36,864 + 524,288 = 561,152 x 45 = 25,251,840 (seed), x4 = 101,007,360 */
    s = state("qwen3.5-397b-a17b", 4, HS_BF16, 3);
    assert_int_equal(s.slot_bytes, 25251840);
    assert_int_equal(s.req_bytes, 101007360);
    /* Qwen3-Next tp8 bf16 (seed §4.3): conv_dim 8,192, cd 1,024: conv 3*1024*2 = 6,144;
     *   hv 4: 4*16,384*2 = 131,072; per layer 137,216 x 36 = 4,939,776 */
    s = state("qwen3-next-80b-a3b", 8, HS_BF16, 0);
    assert_int_equal(s.slot_bytes, 4939776);
    /* 9B tp1, SSM f32 (model-spec §4.2 "49.1 MiB"): conv 3*8192*2 = 49,152; SSM 32*16,384*4 = 2,097,152;
     *   per layer 2,146,304 x 24 = 51,511,296 (49.125 MiB) */
    s = state("qwen3.5-9b", 1, HS_F32, 0);
    assert_int_equal(s.conv_layer_bytes, 49152);
    assert_int_equal(s.ssm_layer_bytes, 2097152);
    assert_int_equal(s.req_bytes, 51511296);
    /* 9B tp2 bf16 ("25.1 MiB" at tp1 / 2): conv 3*4096*2 = 24,576; SSM 16*16,384*2 = 524,288;
     *   548,864 x 24 = 13,172,736 (12.56 MiB) */
    s = state("qwen3.5-9b", 2, HS_BF16, 0);
    assert_int_equal(s.req_bytes, 13172736);
    /* 27B tp1 f32 ("146.8 MiB"): conv_dim 4,096 + 6,144 = 10,240: conv 3*10240*2 = 61,440;
     *   SSM 48*16,384*4 = 3,145,728; 3,207,168 x 48 = 153,944,064 (146.81 MiB) */
    s = state("qwen3.5-27b", 1, HS_F32, 0);
    assert_int_equal(s.req_bytes, 153944064);
    /* 27B tp2 f32 ("73.4"): 76,972,032; tp8 f32 ("18.4"): conv 3*1280*2 = 7,680 + SSM 6*16,384*4 =
     *   393,216 = 400,896 x 48 = 19,243,008 */
    assert_int_equal(state("qwen3.5-27b", 2, HS_F32, 0).req_bytes, 76972032);
    assert_int_equal(state("qwen3.5-27b", 8, HS_F32, 0).req_bytes, 19243008);
    /* 2B tp4 f32 ("4.7"): cd 6,144/4 = 1,536: conv 9,216; SSM 4*16,384*4 = 262,144; 271,360 x 18 = 4,884,480 */
    assert_int_equal(state("qwen3.5-2b", 4, HS_F32, 0).req_bytes, 4884480);
}

static void test_state_pages(void **st) {
    (void)st;
    /* 397B tp4 bf16 on fp8 blocks: ceil(24,422,400 / 124,800) = ceil(195.69) = 196 (seed's
     * per_req_cache_equiv_blocks) */
    mcfg_t c = load("qwen3.5-397b-a17b");
    assert_int_equal(mem_state_pages(&c, 4, HS_BF16, 0, 124800), 196);
    /* the engine's packed state map takes 199 (granules do not fill every page) */
    assert_int_equal(mem_state_pages_packed(&c, 4, HS_BF16, 0, 124800), 199);
    /* k=1: two copies of 24,698,880 = 49,397,760 on 133,120-byte blocks: ceil(371.07) = 372 */
    assert_int_equal(mem_state_pages(&c, 4, HS_BF16, 1, 133120), 372);
    /* Qwen3-Next tp8: ceil(4,939,776 / 99,840) = ceil(49.48) = 50 (seed) */
    c = load("qwen3-next-80b-a3b");
    assert_int_equal(mem_state_pages(&c, 8, HS_BF16, 0, 99840), 50);
    /* 9B tp1 f32 on bf16 blocks: ceil(51,511,296 / 524,288) = ceil(98.25) = 99 */
    c = load("qwen3.5-9b");
    assert_int_equal(mem_state_pages(&c, 1, HS_F32, 0, 524288), 99);
    /* a page as big as the state: 1 */
    assert_int_equal(mem_state_pages(&c, 1, HS_F32, 0, 51511296), 1);
}

/* ---- weights ------------------------------------------------------------------------ */

/* A tiny dense model: H 256, one GDN + one attention layer, Hq 2 (gated), Hkv 1, D 128,
 * Hk 1, Hv 2, dk = dv = 128, Kc 4, V 1000 (untied), dense I 384. */
static const char *tiny =
    "{\"model_type\": \"qwen3_5_text\", \"hidden_size\": 256, \"num_hidden_layers\": 2,"
    " \"layer_types\": [\"linear_attention\", \"full_attention\"],"
    " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 128,"
    " \"linear_num_key_heads\": 1, \"linear_num_value_heads\": 2, \"linear_key_head_dim\": 128,"
    " \"linear_value_head_dim\": 128, \"linear_conv_kernel_dim\": 4, \"vocab_size\": 1000,"
    " \"intermediate_size\": 384, \"rope_theta\": 1e7, \"partial_rotary_factor\": 0.25,"
    " \"tie_word_embeddings\": false}";

static void test_weights_tiny(void **st) {
    (void)st;
    mcfg_t c;
    char err[256];
    assert_int_equal(mcfg_parse(tiny, "tiny.json", &c, err, sizeof err), HS_OK);
    /* bf16 parameters:
     *   embed + lm_head 2*1000*256 = 512,000; final norm 256; layer norms 2*2*256 = 1,024
     *   GDN: in_proj_qkv [512,256] 131,072; z [256,256] 65,536; b, a [2,256] 1,024; conv 512*4 = 2,048;
     *        A_log + dt_bias 4; norm 128; out_proj [256,256] 65,536            -> 265,348
     *   attn: q(+gate) [512,256] 131,072; k, v [128,256] 65,536; o [256,256] 65,536; q/k norm 256 -> 262,400
     *   MLP x2: 3*384*256 = 294,912 each                                          -> 589,824
     *   total 1,630,852 params = 3,261,704 bytes */
    assert_int_equal(mem_weight_bytes(&c, 1, HS_BF16, false), 3261704);
    /* fp8: matrix bytes + 4 * ceil(r/128) * ceil(c/128):
     *   qkv 131,072+32; z 65,536+16; out 65,536+16; q 131,072+32; k, v 2*(32,768+8); o 65,536+16;
     *   MLP 2 layers x 3 x (98,304 + 3*2*4) = 589,968           -> 1,114,384
     *   the rest stays bf16: (512,000+256+1,024+1,024+2,048+4+128+256) * 2 = 1,033,480
     *   total 2,147,864 */
    assert_int_equal(mem_weight_bytes(&c, 1, HS_F8_E4M3, false), 2147864);
}

static void test_weights_real(void **st) {
    (void)st;
    /* 0.8B tp1 bf16 (tied): embed 248,320*1,024 = 254,279,680; final norm 1,024; layer norms 24*2,048 = 49,152
     *   GDN (x18): qkv 6,144*1,024 = 6,291,456; z 2,097,152; b+a 32,768; conv 24,576; A_log+dt_bias 32;
     *              norm 128; out 2,097,152 -> 10,543,264 -> 189,778,752
     *   attn (x6): q 4,096*1,024 = 4,194,304; k+v 1,048,576; o 2,097,152; norms 512 -> 7,340,544 -> 44,043,264
     *   MLP (x24): 3*3,584*1,024 = 11,010,048 -> 264,241,152
     *   = 752,393,024 params = 1,504,786,048 bytes */
    mcfg_t c = load("qwen3.5-0.8b");
    assert_int_equal(mem_weight_bytes(&c, 1, HS_BF16, false), 1504786048);
    /* + MTP: fc [1024, 2048] 2,097,152; 3 norms 3,072; layer norms 2,048; attn 7,340,544; MLP 11,010,048
     *   = 20,452,864 params = 40,905,728 bytes */
    assert_int_equal(mem_weight_bytes(&c, 1, HS_BF16, true), 1504786048 + 40905728);
    /* tp2: replicated norms R = 1,024 + 49,152 + 18*128 + 6*512 = 55,552; embed 124,160*1,024 = 127,139,840;
     *   the rest halves: (752,393,024 - 254,279,680 - 55,552) / 2 = 249,028,896
     *   = 376,224,288 params = 752,448,576 bytes */
    assert_int_equal(mem_weight_bytes(&c, 2, HS_BF16, false), 752448576);
    /* Whole models land on their names (text weights, no MTP, bf16 = 2 B/param). */
    struct { const char *name; double lo, hi; } names[] = {
        {"qwen3-next-80b-a3b", 79e9, 81e9}, {"qwen3.5-397b-a17b", 395e9, 398e9},
        {"qwen3.5-27b", 26.5e9, 27.5e9},    {"qwen3.5-9b", 8.8e9, 9.2e9},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        mcfg_t m = load(names[i].name);
        double params = (double)mem_weight_bytes(&m, 1, HS_BF16, false) / 2;
        if (params < names[i].lo || params > names[i].hi) fail_msg("%s: %.3g params", names[i].name, params);
        /* more ranks, fewer bytes each, never below an even split */
        size_t w1 = mem_weight_bytes(&m, 1, HS_BF16, false), w4 = mem_weight_bytes(&m, 4, HS_BF16, false);
        assert_true(w4 < w1 && w4 >= w1 / 4);
        /* fp8 is a bit over half of bf16 (embeddings stay bf16) */
        size_t f1 = mem_weight_bytes(&m, 1, HS_F8_E4M3, false);
        assert_true(f1 > w1 / 2 && f1 < w1 * 3 / 4);
    }
}

/* ---- the plan: 0.8B tp1 bf16 on a 10 GiB card, worked by hand --------------------- */
static void test_plan_small(void **st) {
    (void)st;
    mcfg_t c = load("qwen3.5-0.8b");
    mem_opts_t o;
    mem_opts_default(&o);
    o.gpu_mem_gib = 10;
    mem_plan_t p;
    char err[512];
    assert_int_equal(mem_plan(&p, &c, &o, err, sizeof err), HS_OK);
    /* gpu 10 GiB = 10,737,418,240; x 0.9 = 9,663,676,416; safety 2% = 214,748,364;
     * activations 16,384 * 1,024 * 2 * 32 = 1,073,741,824; reserve 1,288,490,188;
     * weights (bf16, no MTP) 1,504,786,048; budget = 6,870,400,180 */
    assert_int_equal(p.gpu_bytes, 10737418240ULL);
    assert_int_equal(p.usable_bytes, 9663676416ULL);
    assert_int_equal(p.reserve_bytes, 1288490188ULL);
    assert_int_equal(p.budget_bytes, 6870400180ULL);
    /* state dtype from mamba_ssm_dtype (float32): conv 3*6,144*2 = 36,864 + SSM 16*16,384*4 = 1,048,576
     * = 1,085,440 x 18 = 19,537,920 */
    assert_int_equal(p.opts.state_dtype, HS_F32);
    assert_int_equal(p.state.req_bytes, 19537920);
    /* KV bf16, kvh 2, 6 rows: 12,288 per token (12 KiB), 196,608 per block; 2,048 tokens -> b = 128 */
    assert_int_equal(p.kv_token_bytes, 12288);
    assert_int_equal(p.kv.kv_bytes, 196608);
    const mem_layout_t *cp = &p.layouts[0], *sl = &p.layouts[1], *pg = &p.layouts[2];
    /* paged: 6,870,400,180 / 196,608 = 34,944 pages; E = ceil(19,537,920 / 196,608) = 100;
     * 128 + 100 = 228 pages per request -> 153 requests (memory-bound);
     * cached tokens (34,944 - 153*100) * 16 = 314,304;
     * used 153 * (2,048*12,288 + 19,537,920) = 6,839,672,832 of 6,870,269,952 -> waste 0.445 % */
    assert_string_equal(pg->name, "paged");
    assert_int_equal(pg->pool_pages, 34944);
    assert_int_equal(pg->state_pages, 100);
    assert_int_equal(pg->pages_per_req, 228);
    assert_int_equal(pg->max_concurrent, 153);
    assert_false(pg->seq_bound);
    assert_int_equal(pg->max_cached_tokens, 314304);
    assert_int_equal(pg->used_bytes, 6839672832ULL);
    assert_true(pg->waste_pct > 0.445 && pg->waste_pct < 0.446);
    /* coupled: page 196,608 + 19,537,920 = 19,734,528; 348 pages; 129 per request -> 2 requests;
     * cached (348 - 2) * 16 = 5,536 */
    assert_int_equal(cp->page_bytes, 19734528);
    assert_int_equal(cp->pool_pages, 348);
    assert_int_equal(cp->state_pages, 1);
    assert_int_equal(cp->max_concurrent, 2);
    assert_int_equal(cp->max_cached_tokens, 5536);
    assert_true(cp->waste_pct > 98);
    /* slots at max_num_seqs 512: 512 * 100 = 51,200 state pages > 34,944: does not fit */
    assert_int_equal(sl->state_region_pages, 51200);
    assert_int_equal(sl->max_concurrent, 0);
    assert_non_null(strstr(sl->verdict, "does not fit"));

    /* slots at max_num_seqs 64: 6,400 state pages, 28,544 KV pages = 223 requests of 128 blocks,
     * capped at 64 slots; cached 28,544 * 16 = 456,704. Paged is capped at 64 too. */
    o.max_num_seqs = 64;
    assert_int_equal(mem_plan(&p, &c, &o, err, sizeof err), HS_OK);
    assert_int_equal(sl->kv_pages, 28544);
    assert_int_equal(sl->mem_concurrent, 223);
    assert_int_equal(sl->max_concurrent, 64);
    assert_true(sl->seq_bound);
    assert_int_equal(sl->max_cached_tokens, 456704);
    assert_int_equal(pg->max_concurrent, 64);
    assert_int_equal(pg->mem_concurrent, 153);
}

/* The seed's case (seed-system §4.3): 397B tp4 fp8 KV, bf16 state, block 16, MI355X. */
static void test_plan_seed(void **st) {
    (void)st;
    mcfg_t c = load("qwen3.5-397b-a17b");
    mem_opts_t o;
    mem_opts_default(&o);
    o.tp = 4;
    o.kv_dtype = HS_F8_E4M3;
    o.state_dtype = HS_BF16;
    o.state_dtype_set = true;
    o.weights_dtype = HS_F8_E4M3;
    o.gpu_mem_gib = mem_gpu_find("MI355X-288G")->mem_gib;
    mem_plan_t p;
    char err[512];
    assert_int_equal(mem_plan(&p, &c, &o, err, sizeof err), HS_OK);
    assert_int_equal(p.layouts[0].page_bytes, 24547200); /* 124,800 + 24,422,400 = 23.41 MiB */
    assert_int_equal(p.layouts[1].page_bytes, 124800);
    assert_int_equal(p.layouts[2].state_pages, 196);
    /* slots: 512 groups x 196 pages x 124,800 = 12,523,929,600 B (ATOM's tensor: 512 x 24,422,400 =
     * 12,504,268,800 = 11.646 GiB; the page rounding adds 0.15 %) */
    assert_int_equal((size_t)p.layouts[1].state_region_pages * 124800, 12523929600ULL);
    /* 2,048-token requests in the coupled pool: 129 pages each; the seed's 6,906-block pool held ~53,
     * ours (fp8 weights, our reserve) is within 2 % of that pool */
    assert_true(p.layouts[0].pool_pages > 6906 * 98 / 100 && p.layouts[0].pool_pages < 6906 * 102 / 100);
    assert_int_equal(p.layouts[0].max_concurrent, p.layouts[0].pool_pages / 129);
}

static void test_plan_errors(void **st) {
    (void)st;
    mcfg_t c = load("qwen3.5-397b-a17b");
    mem_opts_t o;
    mem_opts_default(&o);
    mem_plan_t p;
    char err[512];
    o.gpu_mem_gib = 80;
    /* bf16 397B on one 80 GiB card: no pool */
    assert_int_equal(mem_plan(&p, &c, &o, err, sizeof err), HS_ERR_NO_MEMORY);
    assert_non_null(strstr(err, "weights"));
    o.tp = 3; /* 16 key heads do not split 3 ways */
    assert_int_equal(mem_plan(&p, &c, &o, err, sizeof err), HS_ERR_INVALID);
    assert_non_null(strstr(err, "linear_num_key_heads"));
    o.tp = 4;
    o.mtp_k = 5;
    assert_int_equal(mem_plan(&p, &c, &o, err, sizeof err), HS_ERR_INVALID);
    o.mtp_k = 0;
    o.gpu_mem_gib = 0;
    assert_int_equal(mem_plan(&p, &c, &o, err, sizeof err), HS_ERR_INVALID);
    o.gpu_mem_gib = 80;
    o.kv_dtype = HS_F32;
    assert_int_equal(mem_plan(&p, &c, &o, err, sizeof err), HS_ERR_INVALID);
    mcfg_t n = load("qwen3.5-27b"); /* Hkv 4: tp 8 replicates (8 % 4 == 0) */
    assert_int_equal(mem_check_tp(&n, 8, err, sizeof err), HS_OK);
    assert_int_equal(mem_check_tp(&n, 16, err, sizeof err), HS_ERR_INVALID); /* Hk 16 ok, Hq 24 % 16 != 0 */
    assert_null(mem_gpu_find("a100"));
    assert_true(mem_gpu_find("h100-80g")->mem_gib > 79 && mem_gpu_find("h100-80g")->mem_gib < 80);
}

/* ---- the CLI ----------------------------------------------------------------------------- */

static const char *bin(void) {
    const char *b = getenv("HYSERVE_BIN");
    return b ? b : "build/hyserve";
}

/* Run `hyserve plan <args>`; stdout into out; returns the exit status. */
static int run(const char *args, char *out, size_t n) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' plan %s 2>/dev/null", bin(), args);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t got = fread(out, 1, n - 1, f);
    out[got] = 0;
    int st = pclose(f);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

#define SEED "--model qwen3.5-397b-a17b --tp 4 --kv-dtype fp8 --state-dtype bf16 --gpu mi355x-288g"

static json_int_t jint(json_t *root, const char *a, const char *b, const char *c) {
    json_t *v = json_object_get(root, a);
    if (b) v = json_object_get(v, b);
    if (c) v = json_object_get(v, c);
    if (!json_is_integer(v)) fail_msg("%s.%s.%s: not an integer", a, b ? b : "", c ? c : "");
    return json_integer_value(v);
}

static void test_cli_json(void **st) {
    (void)st;
    static char out[1 << 16];
    assert_int_equal(run(SEED " --json", out, sizeof out), 0);
    json_error_t je;
    json_t *r = json_loads(out, 0, &je);
    if (!r) fail_msg("not JSON: %s", je.text);
    assert_int_equal(jint(r, "tp", NULL, NULL), 4);
    assert_string_equal(json_string_value(json_object_get(r, "kv_dtype")), "fp8");
    assert_string_equal(json_string_value(json_object_get(r, "state_dtype")), "bf16");
    assert_int_equal(jint(r, "per_rank", "state_bytes_per_request", NULL), 24422400);
    assert_int_equal(jint(r, "per_rank", "kv_block_bytes", NULL), 124800);
    assert_int_equal(jint(r, "per_rank", "kv_bytes_per_token", NULL), 7800);
    assert_int_equal(jint(r, "per_rank", "conv_bytes_per_layer", NULL), 18432);
    assert_int_equal(jint(r, "per_rank", "ssm_bytes_per_layer", NULL), 524288);
    assert_int_equal(jint(r, "layouts", "coupled", "page_bytes"), 24547200);
    assert_int_equal(jint(r, "layouts", "coupled", "state_pages"), 1);
    assert_int_equal(jint(r, "layouts", "slots", "page_bytes"), 124800);
    assert_int_equal(jint(r, "layouts", "slots", "state_pages"), 196);
    assert_int_equal(jint(r, "layouts", "slots", "state_region_pages"), 512 * 196);
    assert_int_equal(jint(r, "layouts", "paged", "state_pages"), 196);
    assert_int_equal(jint(r, "layouts", "paged", "pages_per_request"), 128 + 196);
    /* the budget identity holds in the output */
    assert_int_equal(jint(r, "per_rank", "pool_budget_bytes", NULL),
                     jint(r, "per_rank", "usable_bytes", NULL) - jint(r, "per_rank", "weight_bytes", NULL) -
                         jint(r, "per_rank", "reserve_bytes", NULL));
    const char *names[] = {"coupled", "slots", "paged"};
    for (int i = 0; i < 3; i++) {
        json_t *l = json_object_get(json_object_get(r, "layouts"), names[i]);
        assert_true(json_is_string(json_object_get(l, "verdict")));
        assert_true(json_is_number(json_object_get(l, "waste_pct")));
        assert_true(json_is_string(json_object_get(l, "limit")));
        assert_true(jint(l, "max_cached_tokens", NULL, NULL) > 0);
        assert_true(jint(l, "max_concurrent", NULL, NULL) > 0);
    }
    json_decref(r);
    /* MTP 1: KV block 133,120 and two state slots of 24,698,880 */
    assert_int_equal(run(SEED " --mtp 1 --json", out, sizeof out), 0);
    r = json_loads(out, 0, &je);
    assert_non_null(r);
    assert_int_equal(jint(r, "per_rank", "kv_block_bytes", NULL), 133120);
    assert_int_equal(jint(r, "per_rank", "state_slot_bytes", NULL), 24698880);
    assert_int_equal(jint(r, "per_rank", "state_bytes_per_request", NULL), 49397760);
    json_decref(r);
}

static void test_cli_table(void **st) {
    (void)st;
    static char out[1 << 16];
    assert_int_equal(run(SEED, out, sizeof out), 0);
    assert_non_null(strstr(out, "24,422,400"));
    assert_non_null(strstr(out, "124,800"));
    assert_non_null(strstr(out, "24,547,200"));
    assert_non_null(strstr(out, "23.410"));
    assert_non_null(strstr(out, "coupled"));
    assert_non_null(strstr(out, "paged"));
    /* --opt=value form and --gpu-mem-gib */
    assert_int_equal(run("--model=qwen3.5-9b --gpu-mem-gib=79.18 --tp=2", out, sizeof out), 0);
    /* bad options: exit 2 */
    assert_int_equal(run("--model qwen3.5-9b --gpu h100-80g --tp 0", out, sizeof out), 2);
    assert_int_equal(run("--model qwen3.5-9b --gpu h100-80g --kv-dtype f32", out, sizeof out), 2);
    assert_int_equal(run("--model qwen3.5-9b --gpu h100-80g --frobnicate 1", out, sizeof out), 2);
    assert_int_equal(run("--model qwen3.5-9b --gpu a100", out, sizeof out), 2);
    assert_int_equal(run("--model qwen3.5-9b", out, sizeof out), 2);
    assert_int_equal(run("--model qwen3.5-9b --gpu h100-80g --gpu-mem-gib 80", out, sizeof out), 2);
    assert_int_equal(run("--model qwen3.5-9b --gpu h100-80g --tp 3", out, sizeof out), 2);
    assert_int_equal(run("--model qwen3.5-9b --gpu h100-80g --mem-util 1.5", out, sizeof out), 2);
    assert_int_equal(run("--model qwen3.5-9b --gpu h100-80g --tp", out, sizeof out), 2);
    /* a model that does not fit: exit 1 */
    assert_int_equal(run("--model qwen3.5-397b-a17b --gpu h100-80g", out, sizeof out), 1);
    assert_int_equal(run("--help", out, sizeof out), 0);
    assert_non_null(strstr(out, "--kv-dtype"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_block),      cmocka_unit_test(test_state),
        cmocka_unit_test(test_state_pages),   cmocka_unit_test(test_weights_tiny),
        cmocka_unit_test(test_weights_real),  cmocka_unit_test(test_plan_small),
        cmocka_unit_test(test_plan_seed),     cmocka_unit_test(test_plan_errors),
        cmocka_unit_test(test_cli_json),      cmocka_unit_test(test_cli_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
