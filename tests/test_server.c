/*
 * test_server: the server's protocol layer (oai.h) without sockets or an engine:
 * request parsing and validation (every field, every wrong type), stop-string holding,
 * SSE framing, chunk/response/error shapes, logprobs in both shapes. The HTTP layer
 * and threads are tested end to end (tests/e2e/test_server.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oai.h"
#include "util.h"

static int parse(oai_kind_t kind, const char *body, oai_req_t *r, oai_err_t *e) {
    memset(e, 0, sizeof *e);
    return oai_parse(kind, body, strlen(body), r, e);
}

/* Expect a 400 naming `param` ("" for none). */
static void bad(oai_kind_t kind, const char *body, const char *param) {
    oai_req_t r;
    oai_err_t e;
    int rc = parse(kind, body, &r, &e);
    if (rc == HS_OK) fail_msg("accepted: %s", body);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.type, "invalid_request_error");
    if (strcmp(e.param, param)) fail_msg("%s: param '%s', want '%s' (%s)", body, e.param, param, e.message);
    assert_true(e.message[0]);
    oai_req_free(&r);
}

static void test_parse_completion(void **st) {
    (void)st;
    oai_req_t r;
    oai_err_t e;
    assert_int_equal(parse(OAI_COMPLETION,
                           "{\"model\":\"m\",\"prompt\":\"hi there\",\"max_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,"
                           "\"top_k\":40,\"min_p\":0.05,\"seed\":-3,\"stop\":[\"a\",\"\",\"bc\"],\"logprobs\":2,"
                           "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"n\":1,\"ignore_eos\":true,"
                           "\"presence_penalty\":0,\"frequency_penalty\":0,\"logit_bias\":{},\"user\":\"u\","
                           "\"return_tokens_as_token_ids\":true}",
                           &r, &e),
                     HS_OK);
    assert_string_equal(r.model, "m");
    assert_string_equal(r.prompt, "hi there");
    assert_int_equal(r.prompt_len, 8);
    assert_true(r.max_tokens_set);
    assert_int_equal(r.sp.max_tokens, 7);
    assert_float_equal(r.sp.temperature, 0.5, 1e-6);
    assert_float_equal(r.sp.top_p, 0.9, 1e-6);
    assert_int_equal(r.sp.top_k, 40);
    assert_float_equal(r.sp.min_p, 0.05, 1e-6);
    assert_true(r.sp.has_seed);
    assert_true(r.sp.seed == (uint64_t)-3);
    assert_true(r.sp.ignore_eos);
    assert_int_equal(r.n_stop, 2); /* the empty one is dropped */
    assert_string_equal(r.stop[1], "bc");
    assert_int_equal(r.n_logprobs, 2);
    assert_true(r.sp.logprobs);
    assert_int_equal(r.sp.top_logprobs, 2);
    assert_true(r.stream && r.include_usage);
    assert_true(r.tokens_as_ids);
    assert_int_equal(r.sp.n_stop, 0);
    oai_req_free(&r);

    /* defaults; null means absent */
    assert_int_equal(parse(OAI_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":null,\"stop\":null,\"seed\":null}", &r, &e), HS_OK);
    assert_null(r.model);
    assert_false(r.max_tokens_set);
    assert_false(r.stream);
    assert_int_equal(r.n_logprobs, -1);
    assert_false(r.sp.has_seed);
    assert_float_equal(r.sp.temperature, 1.0, 1e-6);
    oai_req_free(&r);

    /* token prompts, single-element lists; top_k -1 is off */
    assert_int_equal(parse(OAI_COMPLETION, "{\"prompt\":[1,2,3],\"top_k\":-1}", &r, &e), HS_OK);
    assert_int_equal(r.n_prompt_ids, 3);
    assert_int_equal(r.prompt_ids[2], 3);
    assert_int_equal(r.sp.top_k, 0);
    oai_req_free(&r);
    assert_int_equal(parse(OAI_COMPLETION, "{\"prompt\":[[5,6]]}", &r, &e), HS_OK);
    assert_int_equal(r.n_prompt_ids, 2);
    oai_req_free(&r);
    assert_int_equal(parse(OAI_COMPLETION, "{\"prompt\":[\"one\"],\"stop\":\"x\"}", &r, &e), HS_OK);
    assert_string_equal(r.prompt, "one");
    assert_int_equal(r.n_stop, 1);
    oai_req_free(&r);
}

static void test_parse_chat(void **st) {
    (void)st;
    oai_req_t r;
    oai_err_t e;
    assert_int_equal(parse(OAI_CHAT,
                           "{\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
                           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
                           "{\"role\":\"assistant\",\"content\":null}],"
                           "\"max_tokens\":3,\"max_completion_tokens\":9,\"logprobs\":true,\"top_logprobs\":4,"
                           "\"chat_template_kwargs\":{\"enable_thinking\":false}}",
                           &r, &e),
                     HS_OK);
    assert_int_equal(r.n_msgs, 3);
    assert_string_equal(r.msgs[0].role, "system");
    assert_string_equal(r.msgs[1].content, "ab");
    assert_string_equal(r.msgs[2].content, "");
    assert_int_equal(r.sp.max_tokens, 9); /* max_completion_tokens wins */
    assert_int_equal(r.n_logprobs, 4);
    assert_int_equal(r.enable_thinking, 0);
    oai_req_free(&r);
    assert_int_equal(parse(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true}", &r, &e), HS_OK);
    assert_int_equal(r.n_logprobs, 0);
    assert_int_equal(r.enable_thinking, -1);
    oai_req_free(&r);
}

static void test_parse_errors(void **st) {
    (void)st;
    const oai_kind_t C = OAI_COMPLETION, H = OAI_CHAT;
    bad(C, "", "");
    bad(C, "{", "");
    bad(C, "[]", "");
    bad(C, "\"x\"", "");
    bad(C, "{\"prompt\":\"a\",\"prompt\":\"b\"}", "");   /* duplicate keys */
    bad(C, "{\"prompt\":\"\\u0000\"}", "");               /* NUL */
    bad(C, "{\"prompt\":\"\\ud800\"}", "");               /* lone surrogate */
    bad(C, "{\"prompt\":\"\xc3\x28\"}", "");              /* invalid UTF-8 */
    bad(C, "{\"prompt\":\"\xed\xa0\x80\"}", "");          /* UTF-8-encoded surrogate */
    bad(C, "{}", "prompt");
    bad(C, "{\"prompt\":5}", "prompt");
    bad(C, "{\"prompt\":[]}", "prompt");
    bad(C, "{\"prompt\":[1,-2]}", "prompt");
    bad(C, "{\"prompt\":[1,2.5]}", "prompt");
    bad(C, "{\"prompt\":[\"a\",\"b\"]}", "prompt");
    bad(C, "{\"prompt\":[[1],[2]]}", "prompt");
    bad(C, "{\"prompt\":[[]]}", "prompt");
    bad(C, "{\"prompt\":[true]}", "prompt");
    bad(C, "{\"prompt\":\"a\",\"model\":3}", "model");
    bad(C, "{\"prompt\":\"a\",\"max_tokens\":0}", "max_tokens");
    bad(C, "{\"prompt\":\"a\",\"max_tokens\":-1}", "max_tokens");
    bad(C, "{\"prompt\":\"a\",\"max_tokens\":\"5\"}", "max_tokens");
    bad(C, "{\"prompt\":\"a\",\"max_tokens\":1.5}", "max_tokens");
    bad(C, "{\"prompt\":\"a\",\"max_tokens\":99999999999}", "max_tokens");
    bad(C, "{\"prompt\":\"a\",\"temperature\":-0.1}", "temperature");
    bad(C, "{\"prompt\":\"a\",\"temperature\":\"hot\"}", "temperature");
    bad(C, "{\"prompt\":\"a\",\"top_p\":0}", "top_p");
    bad(C, "{\"prompt\":\"a\",\"top_p\":1.5}", "top_p");
    bad(C, "{\"prompt\":\"a\",\"top_k\":-2}", "top_k");
    bad(C, "{\"prompt\":\"a\",\"top_k\":2.0}", "top_k");
    bad(C, "{\"prompt\":\"a\",\"min_p\":1}", "min_p");
    bad(C, "{\"prompt\":\"a\",\"seed\":1.5}", "seed");
    bad(C, "{\"prompt\":\"a\",\"stream\":1}", "stream");
    bad(C, "{\"prompt\":\"a\",\"stream_options\":[]}", "stream_options");
    bad(C, "{\"prompt\":\"a\",\"stream_options\":{\"include_usage\":\"y\"}}", "include_usage");
    bad(C, "{\"prompt\":\"a\",\"n\":2}", "n");
    bad(C, "{\"prompt\":\"a\",\"n\":\"1\"}", "n");
    bad(C, "{\"prompt\":\"a\",\"echo\":true}", "echo");
    bad(C, "{\"prompt\":\"a\",\"best_of\":3}", "best_of");
    bad(C, "{\"prompt\":\"a\",\"suffix\":\"z\"}", "suffix");
    bad(C, "{\"prompt\":\"a\",\"logprobs\":21}", "logprobs");
    bad(C, "{\"prompt\":\"a\",\"logprobs\":true}", "logprobs");
    bad(C, "{\"prompt\":\"a\",\"stop\":7}", "stop");
    bad(C, "{\"prompt\":\"a\",\"stop\":[\"a\",1]}", "stop");
    bad(C, "{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}", "stop");
    bad(C, "{\"prompt\":\"a\",\"ignore_eos\":0}", "ignore_eos");
    bad(C, "{\"prompt\":\"a\",\"presence_penalty\":0.5}", "presence_penalty");
    bad(C, "{\"prompt\":\"a\",\"frequency_penalty\":\"x\"}", "frequency_penalty");
    bad(C, "{\"prompt\":\"a\",\"repetition_penalty\":1.2}", "repetition_penalty");
    bad(C, "{\"prompt\":\"a\",\"logit_bias\":{\"5\":1}}", "logit_bias");
    bad(C, "{\"prompt\":\"a\",\"return_tokens_as_token_ids\":1}", "return_tokens_as_token_ids");
    bad(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_object\"}}", "response_format");
    bad(H, "{}", "messages");
    bad(H, "{\"messages\":{}}", "messages");
    bad(H, "{\"messages\":[]}", "messages");
    bad(H, "{\"messages\":[1]}", "messages");
    bad(H, "{\"messages\":[{\"content\":\"x\"}]}", "messages");
    bad(H, "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", "messages");
    bad(H, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages");
    bad(H, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", "messages");
    bad(H, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{}]}]}", "messages");
    bad(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":2}", "logprobs");
    bad(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", "top_logprobs");
    bad(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":21}", "top_logprobs");
    bad(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":0}", "max_completion_tokens");
    bad(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}", "tools");
    bad(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":3}", "chat_template_kwargs");

    /* oversized */
    oai_req_t r;
    oai_err_t e;
    assert_int_not_equal(oai_parse(C, "{}", OAI_MAX_BODY + 1, &r, &e), HS_OK);
    assert_int_equal(e.status, 413);
    assert_string_equal(e.code, "request_too_large");
    oai_req_free(&r);
}

static void test_error_json(void **st) {
    (void)st;
    oai_err_t e;
    oai_errf(&e, 404, "invalid_request_error", "model", "model_not_found", "no model '%s'", "x\"y");
    char *s = oai_err_json(&e);
    assert_string_equal(s, "{\"error\":{\"message\":\"no model 'x\\\"y'\",\"type\":\"invalid_request_error\","
                           "\"param\":\"model\",\"code\":\"model_not_found\"}}");
    free(s);
    oai_errf(&e, 500, "server_error", NULL, NULL, "boom");
    s = oai_err_json(&e);
    assert_string_equal(s, "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
    free(s);
}

/* Feed pieces through a stop matcher; return everything returned (caller frees). */
static char *run_stop(const char *const *stop, int n_stop, const char *const *pieces, int n, bool *hit) {
    oai_stop_t s;
    oai_stop_init(&s, stop, n_stop);
    char *acc = calloc(1, 4096);
    const char *out;
    size_t len;
    for (int i = 0; i < n; i++) {
        oai_stop_feed(&s, pieces[i], strlen(pieces[i]), &out, &len);
        strncat(acc, out, len);
    }
    if (!s.hit) {
        oai_stop_flush(&s, &out, &len);
        strncat(acc, out, len);
    }
    *hit = s.hit;
    oai_stop_free(&s);
    return acc;
}

static void test_stop_strings(void **st) {
    (void)st;
    bool hit;
    const char *stop1[] = {"END"};
    const char *p1[] = {"hello E", "N", "D world"};
    char *r = run_stop(stop1, 1, p1, 3, &hit);
    assert_true(hit);
    assert_string_equal(r, "hello ");
    free(r);

    /* a false start is released */
    const char *p2[] = {"aE", "NX", "b"};
    r = run_stop(stop1, 1, p2, 3, &hit);
    assert_false(hit);
    assert_string_equal(r, "aENXb");
    free(r);

    /* held back at the end and flushed */
    const char *p3[] = {"xyz EN"};
    r = run_stop(stop1, 1, p3, 1, &hit);
    assert_false(hit);
    assert_string_equal(r, "xyz EN");
    free(r);

    /* earliest of several; one inside a piece */
    const char *stop2[] = {"world", "lo"};
    const char *p4[] = {"hello world"};
    r = run_stop(stop2, 2, p4, 1, &hit);
    assert_true(hit);
    assert_string_equal(r, "hel");
    free(r);

    /* no stop strings: pass-through, nothing held */
    oai_stop_t s;
    oai_stop_init(&s, NULL, 0);
    const char *out;
    size_t len;
    oai_stop_feed(&s, "abc", 3, &out, &len);
    assert_int_equal(len, 3);
    oai_stop_free(&s);

    /* holding: what is returned never ends in a prefix of the stop string */
    const char *stop3[] = {"\xc3\xa9t\xc3\xa9"}; /* "été" */
    oai_stop_init(&s, stop3, 1);
    oai_stop_feed(&s, "caf\xc3\xa9", 5, &out, &len); /* "café": é may start "été" */
    assert_int_equal(len, 3);
    assert_memory_equal(out, "caf", 3);
    oai_stop_feed(&s, "t\xc3\xa9!", 4, &out, &len);
    assert_true(s.hit);
    assert_int_equal(len, 0);
    oai_stop_feed(&s, "more", 4, &out, &len); /* after a hit: nothing */
    assert_int_equal(len, 0);
    oai_stop_free(&s);
}

static void test_sse_and_chunks(void **st) {
    (void)st;
    size_t len;
    json_t *c = oai_chunk(OAI_CHAT, "chatcmpl-1", 7, "m", "", 0, true, NULL, NULL);
    char *f = oai_sse_frame(c, &len);
    assert_string_equal(f, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\","
                           "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                           "\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    assert_int_equal(len, strlen(f));
    free(f);
    json_decref(c);

    c = oai_chunk(OAI_CHAT, "chatcmpl-1", 7, "m", NULL, 0, false, NULL, "length");
    f = oai_sse_frame(c, &len);
    assert_non_null(strstr(f, "\"delta\":{},\"logprobs\":null,\"finish_reason\":\"length\""));
    free(f);
    json_decref(c);

    c = oai_chunk(OAI_COMPLETION, "cmpl-1", 7, "m", "hi\n", 3, false, NULL, NULL);
    f = oai_sse_frame(c, &len);
    assert_string_equal(f, "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\","
                           "\"choices\":[{\"index\":0,\"text\":\"hi\\n\",\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    /* one event: no raw newline inside the frame */
    assert_true(strchr(f, '\n') == f + len - 2);
    free(f);
    json_decref(c);

    c = oai_usage_chunk(OAI_COMPLETION, "cmpl-1", 7, "m", 5, 3, 2);
    f = oai_sse_frame(c, &len);
    assert_non_null(strstr(f, "\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8,"
                              "\"prompt_tokens_details\":{\"cached_tokens\":2}}"));
    free(f);
    json_decref(c);

    c = oai_response(OAI_CHAT, "chatcmpl-2", 1, "m", "ok", 2, NULL, "stop", 4, 1, 0);
    char *s = json_dumps(c, JSON_COMPACT);
    assert_non_null(strstr(s, "\"object\":\"chat.completion\""));
    assert_non_null(strstr(s, "\"message\":{\"role\":\"assistant\",\"content\":\"ok\"}"));
    assert_non_null(strstr(s, "\"finish_reason\":\"stop\""));
    free(s);
    json_decref(c);

    /* invalid UTF-8 never reaches the wire */
    json_t *j = oai_json_str("a\xff" "b", 3);
    assert_string_equal(json_string_value(j), "a\xef\xbf\xbd" "b");
    json_decref(j);

    char id[48];
    oai_make_id(OAI_CHAT, 0xabc, id, sizeof id);
    assert_string_equal(id, "chatcmpl-0000000000000abc");
    assert_string_equal(oai_finish_str(HS_FINISH_LENGTH), "length");
    assert_string_equal(oai_finish_str(HS_FINISH_STOP), "stop");
    assert_string_equal(OAI_SSE_DONE, "data: [DONE]\n\n");
}

static void test_logprobs(void **st) {
    (void)st;
    oai_tokp_t tok = {"\xe4\xbd", 2, -0.5f}; /* half a character */
    oai_tokp_t top[3] = {{"\xe4\xbd", 2, -0.5f}, {"x", 1, -1.0f}, {"x", 1, -2.0f}};
    oai_logprobs_t lp;
    oai_logprobs_init(&lp, OAI_CHAT);
    oai_logprobs_add(&lp, &tok, top, 2, 0);
    json_t *o = oai_logprobs_take(&lp);
    char *s = json_dumps(o, JSON_COMPACT);
    assert_string_equal(s, "{\"content\":[{\"token\":\"\xef\xbf\xbd\",\"logprob\":-0.5,\"bytes\":[228,189],"
                           "\"top_logprobs\":[{\"token\":\"\xef\xbf\xbd\",\"logprob\":-0.5,\"bytes\":[228,189]},"
                           "{\"token\":\"x\",\"logprob\":-1.0,\"bytes\":[120]}]}]}");
    free(s);
    json_decref(o);
    oai_logprobs_free(&lp);

    oai_logprobs_init(&lp, OAI_COMPLETION);
    oai_tokp_t t2 = {"x", 1, -1.0f};
    oai_logprobs_add(&lp, &t2, top + 1, 2, 3); /* equal strings: the likelier is kept */
    o = oai_logprobs_take(&lp);
    s = json_dumps(o, JSON_COMPACT);
    assert_string_equal(s, "{\"tokens\":[\"x\"],\"token_logprobs\":[-1.0],\"top_logprobs\":[{\"x\":-1.0}],\"text_offset\":[3]}");
    free(s);
    json_decref(o);
    oai_logprobs_free(&lp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_completion), cmocka_unit_test(test_parse_chat),
        cmocka_unit_test(test_parse_errors),     cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_stop_strings),     cmocka_unit_test(test_sse_and_chunks),
        cmocka_unit_test(test_logprobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
