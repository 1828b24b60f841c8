/*
 * chat: chat prompts for the Qwen3 / Qwen3.5 family (ChatML), rendered in C.
 *
 * There is no Jinja engine. chat_render reproduces what the chat_template shipped in
 * Qwen3's tokenizer_config.json produces for conversations without tools:
 *
 *   [system first]   <|im_start|>system\n{content}<|im_end|>\n
 *   user / system    <|im_start|>{role}\n{content}<|im_end|>\n
 *   assistant        <|im_start|>assistant\n{content}<|im_end|>\n
 *   tool             <|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n
 *                    (consecutive tool messages share one user turn)
 *   generation       <|im_start|>assistant\n   (+ <think>\n\n</think>\n\n when thinking is off)
 *
 * and the template's thinking rules for assistant turns: a "<think>...</think>" block
 * in an assistant message before the last user query is dropped; assistant messages
 * after it keep (or, for the final message, get an empty) <think>\n...\n</think>\n\n
 * block; chat_msg_t.reasoning plays the template's reasoning_content.
 *
 * Not supported (HS_ERR_UNSUPPORTED / HS_ERR_INVALID): tool definitions (`tools`) and
 * assistant tool_calls, multimodal content parts, roles other than system, user,
 * assistant and tool, arbitrary templates. tests/test_tok.c checks the rendering
 * against HF transformers' apply_chat_template on the real template.
 *
 * Special tokens come from tokenizer_config.json when the directory has one:
 * eos_token, pad_token, bos_token (string or {"content": ...}); <|im_start|> and
 * <|im_end|> from additional_special_tokens / added_tokens_decoder, else the ChatML
 * defaults. Stop ids: eos, <|im_end|>, <|endoftext|> and generation_config.json's
 * eos_token_id when present, each only if the tokenizer knows it.
 */
#ifndef HS_CHAT_H
#define HS_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "tok.h"

typedef struct chat chat_t;

typedef struct {
    const char *role;      /* "system", "user", "assistant" or "tool" */
    const char *content;   /* UTF-8, NUL-terminated; NULL means "" */
    const char *reasoning; /* assistant only: reasoning_content, or NULL */
} chat_msg_t;

typedef struct {
    int add_generation_prompt; /* append <|im_start|>assistant\n */
    int enable_thinking;       /* 0: the generation prompt carries an empty think block */
} chat_opts_t;

/* Defaults: add_generation_prompt = 1, enable_thinking = 1 (the template's default). */
chat_opts_t chat_opts_default(void);

/* DIR: a model directory (tokenizer_config.json and generation_config.json optional).
 * tok: the loaded tokenizer, used to resolve stop ids; must outlive the chat_t. */
int chat_load(const char *dir, const tok_t *tok, chat_t **out, char *err, size_t n);
void chat_free(chat_t *c);

/* Render msgs into a heap string (*out, NUL-terminated; caller frees). */
int chat_render(const chat_t *c, const chat_msg_t *msgs, size_t n_msgs, const chat_opts_t *opts,
                char **out, size_t *out_len, char *err, size_t n);

/* Ids a generator should stop on (owned by c). */
const int32_t *chat_stop_ids(const chat_t *c, size_t *n);
int chat_is_stop(const chat_t *c, int32_t id);

/* Token strings in use (never NULL except bos, which Qwen does not have). */
const char *chat_eos_token(const chat_t *c);
const char *chat_bos_token(const chat_t *c);
const char *chat_pad_token(const chat_t *c);
const char *chat_im_start(const chat_t *c);
const char *chat_im_end(const chat_t *c);

#endif
