/*
 * tok: the byte-level BPE tokenizer of Qwen3 / Qwen3.5, loaded from a Hugging Face
 * tokenizer.json and producing the same ids as HF `tokenizers`.
 *
 * Encode, in order (each step as HF does it for this family):
 *   0. UTF-8 check. Invalid input is not refused: every maximal invalid subpart
 *      (Unicode §3.9, the same rule as Python's bytes.decode('utf-8', 'replace') and
 *      Rust's from_utf8_lossy) becomes U+FFFD before anything else. Lone continuation
 *      bytes, overlong forms, truncated sequences, UTF-8-encoded surrogates and
 *      0xF5..0xFF bytes all take this path. NUL bytes are ordinary characters.
 *   1. Added tokens (<|im_start|>, <think>, ...) are cut out of the raw text first:
 *      leftmost-longest, non-overlapping, honouring single_word / lstrip / rstrip;
 *      tokens with normalized=true are matched in the normalized text instead.
 *      TOK_ENC_SPLIT_SPECIAL treats tokens with special=true as plain text.
 *   2. The NFC normalizer (utf8proc) on each remaining segment.
 *   3. The Split pre-tokenizer: the regex from the file, compiled by PCRE2 with UTF
 *      and UCP (JIT when available), "Isolated": every match and every gap is a piece.
 *   4. Byte-level BPE on each piece: bytes → the 256 byte tokens, then merge the
 *      adjacent pair of lowest rank (leftmost on ties) until none is left. Results for
 *      short pieces are cached (repeated words cost one hash lookup).
 *
 * Decode concatenates the raw bytes of each id (byte-level alphabet undone; added
 * tokens give their content). The result may end in half a UTF-8 character; the
 * streaming detokenizer (tok_stream_*) holds such bytes back and emits only complete,
 * valid UTF-8 (anything that can never become valid is emitted as U+FFFD).
 *
 * Supported tokenizer.json: normalizer NFC, null or Sequence of NFC; pre_tokenizer
 * Split(Regex, Isolated) + ByteLevel(use_regex=false) (or a Sequence of those); model
 * BPE without byte_fallback, dropout, continuing_subword_prefix or end_of_word_suffix;
 * merges as ["a","b"] pairs or "a b" strings. Anything else is HS_ERR_UNSUPPORTED with
 * the field named. post_processor is ignored (Qwen adds no BOS/EOS when encoding).
 *
 * Known differences from HF (none in the committed fixture; found by a 6000-string
 * random differential run): HF's NFC (the unicode-normalization crate) leaves some
 * canonically reorderable mark sequences uncomposed where utf8proc and Python compose
 * them (e.g. e + U+10F47 + U+0301); and \p{L}/\p{N} follow PCRE2's Unicode tables
 * (10.42: Unicode 14), so characters assigned later may split differently.
 *
 * The word cache can be turned off with HYSERVE_TOK_CACHE=0 in the environment at
 * load time (benchmarks, debugging); results are identical either way.
 *
 * Threads: a loaded tok_t is read-only; tok_encode may run on any number of threads
 * at once (the word cache is taken with a trylock, and a thread that does not get it
 * encodes uncached). A tok_stream_t belongs to one thread.
 */
#ifndef HS_TOK_H
#define HS_TOK_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok tok_t;

/* Load PATH: a tokenizer.json file, or a directory containing one. Errors name the
 * file and the field (HS_ERR_IO, HS_ERR_FORMAT, HS_ERR_UNSUPPORTED). */
int tok_load(const char *path, tok_t **out, char *err, size_t n);
void tok_free(tok_t *t);

/* One more than the largest id (model vocab and added tokens). */
int32_t tok_n_vocab(const tok_t *t);

/* Encode flags. */
enum {
    TOK_ENC_SPLIT_SPECIAL = 1, /* special=true added tokens are plain text (untrusted input) */
};

/* Encode text[0..len) into a heap array of ids (*ids, *n_ids; caller frees with free();
 * *ids is non-NULL even when *n_ids == 0). Never fails on any input bytes; returns
 * HS_ERR_INVALID only for a NULL argument and HS_ERR_NO_MEMORY for a regex engine
 * resource failure. */
int tok_encode(const tok_t *t, const char *text, size_t len, unsigned flags,
               int32_t **ids, size_t *n_ids, char *err, size_t n);

/* Decode flags. */
enum {
    TOK_DEC_SKIP_SPECIAL = 1, /* drop added tokens with special=true */
};

/* Decode ids into raw bytes (*out, NUL-terminated, *out_len without the NUL; caller
 * frees). The bytes may not be valid UTF-8 (a token can hold part of a character).
 * An id outside [0, n_vocab) or unused: HS_ERR_INVALID naming the position. */
int tok_decode(const tok_t *t, const int32_t *ids, size_t n_ids, unsigned flags,
               char **out, size_t *out_len, char *err, size_t n);

/* Raw bytes of one id (not NUL-terminated), or NULL for an unused/out-of-range id. */
const char *tok_id_bytes(const tok_t *t, int32_t id, size_t *len);

/* Id of a token given by its raw bytes (an added token's content, or a vocab token's
 * decoded bytes); -1 if there is none. */
int32_t tok_lookup(const tok_t *t, const char *s, size_t len);

/* 1 if id is an added token with special=true. */
int tok_is_special(const tok_t *t, int32_t id);

/* ---- streaming detokenizer ---------------------------------------------------
 * Feed ids (or raw bytes) one at a time; each call returns the newly complete text.
 * The returned pointer is owned by the stream and valid until the next call on it.
 * Concatenating every returned chunk plus tok_stream_flush() gives
 * decode(all ids) with invalid sequences replaced by U+FFFD. */
typedef struct tok_stream tok_stream_t;

tok_stream_t *tok_stream_new(const tok_t *t, unsigned dec_flags);
void tok_stream_free(tok_stream_t *s);
/* Push one id. Bad id: HS_ERR_INVALID, nothing consumed, *text = "" */
int tok_stream_push(tok_stream_t *s, int32_t id, const char **text, size_t *len, char *err, size_t n);
/* Push raw bytes (what an id decodes to); never fails. */
void tok_stream_push_bytes(tok_stream_t *s, const char *bytes, size_t nb, const char **text, size_t *len);
/* End of stream: held-back bytes (an unfinished character) come out as U+FFFD. */
void tok_stream_flush(tok_stream_t *s, const char **text, size_t *len);
/* Bytes currently held back (0..3). */
size_t tok_stream_pending(const tok_stream_t *s);

/* ---- UTF-8 helpers (also used by chat and the CLI) ------------------------------ */
/* 1 if s[0..n) is valid UTF-8 (strict: no overlongs, surrogates or > U+10FFFF). */
int tok_utf8_valid(const char *s, size_t n);
/* Copy with every maximal invalid subpart replaced by U+FFFD; caller frees. */
char *tok_utf8_sanitize(const char *s, size_t n, size_t *out_len);
/* NFC of valid UTF-8 s[0..n) (utf8proc); caller frees. NULL on failure. */
char *tok_nfc(const char *s, size_t n, size_t *out_len);

#endif
