#!/usr/bin/env python3
"""Reference fixture for the tokenizer tests: tests/data/tokenizer_cases.json.

Runs the real Qwen3 tokenizer (tests/data/qwen3-tokenizer/, a copy of
../shared/data/qwen3-tokenizer/) through Hugging Face `tokenizers` over a corpus of
hard strings and records the expected ids. If `transformers` is importable it also
renders chat prompts with tokenizer.apply_chat_template (the real Jinja template) so
tests/test_tok.c can compare src/chat.c against it.

    pip install tokenizers transformers
    python3 tools/gen_tokenizer_cases.py [--tokenizer DIR] [--out FILE]

The corpus is deterministic (fixed seed), so re-running it gives the same file as
long as the tokenizer and the library versions do not change.
"""
import argparse
import json
import os
import random
import sys
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hand_cases():
    c = []
    # whitespace runs
    c += ["", " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", " \n", "\n ",
          "  \n  ", "a  b", "a   b", "a\tb", "a \t b", "a\n\nb", "a \n\n b", "hello   ", "hello\n",
          "hello \n", "   leading", "\t\tleading tabs", "trailing\t\t", "mixed \t\n \r\n\t end ",
          " " * 50, "\n" * 30, "\t \t \t", "word" + " " * 7 + "word", "x\u00a0y", "x\u3000y",
          "x\u2028y", "x\u180ey", "\u3000\u3000\u180e'Re", "a \u180e\u180e b", "\u180e\n\n", "  \u180e  x",
          "x\x1c\x1d\x1e\x1fy", "a\u200bb", "\u00a0\u00a0x", "a\u2003\u2003b", "\u0085", "\x0b\x0c"]
    # contractions, every case
    for ct in ["s", "t", "re", "ve", "m", "ll", "d"]:
        for v in {ct, ct.upper(), ct.capitalize(), ct[::-1] if len(ct) > 1 else ct, ct[0] + ct[1:].upper()}:
            c.append("it'" + v + " ok")
    c += ["I'm", "I'M", "you'RE", "We'Ve", "they'Ll", "she'D", "don't", "DON'T", "'s", "'", "''", "'''s",
          "rock'n'roll", "'sup", "x'sx", "O'Neil's", "it\u2019s", "it'\u017f", "it's'", " 's", "l'll'll"]
    # digits
    c += ["0", "12", "123", "1234567890", "3.14159", "1,000,000", "2024-06-01", "v1.2.3", "x86_64",
          "9" * 100, "١٢٣٤", "Ⅻ", "½", "a1b2c3", "0x1F600", "1e-9", "$12.50", "-42"]
    # CJK, mixed scripts
    c += ["你好，世界", "我爱自然语言处理。", "日本語のテキストです", "한국어 텍스트", "中文English混合123",
          "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Привет, мир!", "Γειά σου Κόσμε", "שלום עולם",
          "ქართული", "Ṫḧïṡ ïṡ ẗëẍẗ", "İstanbul ıi", "straße STRASSE", "ﬁ ﬂ ﬀ"]
    # emoji, ZWJ, skin tones, flags
    c += ["😀", "👍🏽", "👨‍👩‍👧‍👦", "👩🏾‍💻", "🏳️‍🌈", "🇯🇵🇺🇸", "❤️", "a😀b", "😀😀😀😀", " 🚀 launch",
          "🧑🏻‍🤝‍🧑🏿", "#️⃣", "\U0001F9D1\u200D\U0001F384"]
    # combining marks, NFC vs NFD
    c += ["e\u0301", "\u00e9", "cafe\u0301", "caf\u00e9", "A\u030a", "\u212b", "n\u0303o", "\u1100\u1161\u11a8",
          "o\u0308\u0304", "a\u0323\u0302", "\u0301", "x\u0301\u0301\u0301", "Zalgo Z\u0351\u0352\u0353\u0354",
          "\u0915\u094d\u0937", "\u2126", "\ufb01"]
    # special tokens inline and lookalikes
    c += ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>\n",
          "a<|endoftext|>b", "<|im_start|><|im_end|>", "<|im_start", "im_start|>", "<|im_start|", "<|im_end |>",
          "<|IM_START|>", "<<|im_start|>>", "<|im_start|><|im_start|>", " <|im_end|> ", "x<think>y</think>z",
          "<tool_call>{\"a\":1}</tool_call>", "<|fim_prefix|>def f():<|fim_suffix|><|fim_middle|>",
          "<|endoftext|><|endoftext|>", "<|vision_start|><|image_pad|><|vision_end|>", "<|", "|>", "<||>",
          "<|endoftext|", "text <|im_start|>assistant\n"]
    # very long runs
    c += ["a" * 10000, "ab" * 2000, " " * 3000 + "x", "\n" * 2000, "Supercalifragilisticexpialidocious" * 20,
          "pneumonoultramicroscopicsilicovolcanoconiosis", "x" * 257, "=" * 500, "-" * 80 + "\n" + "#" * 80,
          "😀" * 300, "你" * 500, "1" * 1000]
    # punctuation, code, URLs
    c += ["Hello, world!", "Hello world", "hello world", "HELLO WORLD", "...", "?!?!", "—–-", "«quoted»",
          "“smart quotes”", "(a) [b] {c}", "a.b.c", "foo@example.com", "https://example.com/path?q=1&r=2#frag",
          "http://localhost:8080/", "def f(x):\n    return x * 2\n", "int main(void) {\n\treturn 0;\n}\n",
          "for (i = 0; i < n; i++) { a[i] += b[i]; }", "    indented\n        more\n", "#include <stdio.h>",
          "SELECT * FROM t WHERE id = 1;", "x = {'a': [1, 2], \"b\": None}", "$ ls -la | grep foo > out.txt",
          "C:\\Users\\name\\file.txt", "a->b && c || !d", "/* comment */ // line", "<div class=\"x\">hi</div>",
          "\\n\\t", "`code` **bold** _it_", "| a | b |\n|---|---|", "key: value\n- item\n", "@@ -1,2 +1,3 @@"]
    # prose
    c += ["The quick brown fox jumps over the lazy dog.",
          "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
          "foolishness, it was the epoch of belief, it was the epoch of incredulity.",
          "Mr. O'Brien's 3 cats -- and 12 dogs! -- weren't there.\nNew line; tab\there.",
          "I've been   there.\n\n\nAnd   you'll see."]
    return c


def random_cases(n, seed=20240601):
    rng = random.Random(seed)
    pool = []
    for cp in list(range(0x20, 0x3000)) + list(range(0x3000, 0x3100)) + list(range(0x4E00, 0x4F00)) + \
            list(range(0xAC00, 0xAD00)) + list(range(0x1F300, 0x1FA00)):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cat[0] in "LMNPS" or cat == "Zs":
            pool.append(ch)
    ascii_pool = [chr(i) for i in range(0x20, 0x7f)] + ["\n", "\t", " ", " ", " "]
    out = []
    for i in range(n):
        length = rng.randint(1, 40)
        p = ascii_pool if i % 3 == 0 else pool
        s = "".join(rng.choice(p) if rng.random() > 0.15 else rng.choice(" \n\t'") for _ in range(length))
        out.append(s)
    return out


def invalid_utf8_cases():
    """Byte strings that are not UTF-8: hyserve replaces each maximal invalid subpart
    with U+FFFD, which is what bytes.decode('utf-8', 'replace') does."""
    return [b"\x80", b"a\x80b", b"\xbf\xbf", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xc1\xbf",
            b"\xe2\x82", b"abc\xe2\x82", b"\xf0\x9f\x98", b"\xf0\x9f\x98 x", b"\xed\xa0\x80", b"\xed\xbf\xbf",
            b"\xed\xa0\xbd\xed\xb8\x80", b"\xff", b"\xfe\xff", b"a\xffb\xfec", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
            b"\xc3", b"\xc3(", b"<|im_start|>\xff<|im_end|>", b"hello \x80\x80\x80 world", b"\xe4\xbd\xa0\xe4\xbd",
            b"\x00", b"a\x00b", b"e\xcc", b"e\xcc\x81\xcc"]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def tiny_tokenizer(qwen_json):
    """A small byte-level BPE (256 byte tokens + a few merges) with the Qwen normalizer
    and pre-tokenizer, and added tokens that use every flag (lstrip, rstrip,
    single_word, normalized, special). Tests the added-token rules without 11 MB."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges = []
    for a, b in [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("\u0120", "w"), ("o", "r"), ("\u0120w", "or"),
                 ("l", "d"), ("\u0120wor", "ld"), ("\u0120", "\u0120")]:
        vocab[a + b] = len(vocab)
        merges.append([a, b])
    added = []
    for content, kw in [("<mask>", dict(lstrip=True, rstrip=True)), ("<l>", dict(lstrip=True)), ("<r>", dict(rstrip=True)),
                        ("word", dict(single_word=True)), ("\u00e9t\u00e9", dict(normalized=True)),
                        ("<|sp|>", dict(special=True)), ("<|sp|>x", dict())]:
        t = {"id": len(vocab) + len(added), "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": False}
        t.update(kw)
        added.append(t)
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": qwen_json["normalizer"], "pre_tokenizer": qwen_json["pre_tokenizer"],
            "post_processor": None, "decoder": qwen_json["decoder"],
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": merges}}


TINY_TEXTS = ["hello world", "a <mask> b", "a   <mask>   b", "<mask>", " <mask>", "<mask> ", "x<l>y", "x  <l>  y",
              "x  <r>  y", "word", "a word b", "awordb", "a wordb", "word_x", "é word", "wordé", "1word",
              "été", "e\u0301te\u0301", "ete\u0301", "L'\u00e9t\u00e9", "<|sp|>", "<|sp|>x", "<|sp|>xx", "a<|sp|>b",
              "  <l><r>  ", "<mask><mask>", "hello<mask>world", "\n<mask>\n", "\t<r>\t\tz"]


def chat_cases():
    sys_m = {"role": "system", "content": "You are a helpful assistant."}
    u1 = {"role": "user", "content": "Hello!"}
    a1 = {"role": "assistant", "content": "Hi! How can I help?"}
    u2 = {"role": "user", "content": "What is 2+2?\nAnswer briefly."}
    a_think = {"role": "assistant", "content": "<think>\nadd them\n</think>\n\nIt is 4."}
    return [
        {"messages": [u1], "add_generation_prompt": True},
        {"messages": [sys_m, u1], "add_generation_prompt": True},
        {"messages": [sys_m, u1], "add_generation_prompt": False},
        {"messages": [sys_m, u1, a1, u2], "add_generation_prompt": True},
        {"messages": [sys_m, u1, a1], "add_generation_prompt": False},
        {"messages": [u1, a1], "add_generation_prompt": True},
        {"messages": [u1, a_think, u2], "add_generation_prompt": True},
        {"messages": [u1, a_think], "add_generation_prompt": False},
        {"messages": [u1, {"role": "system", "content": "late system"}, u2], "add_generation_prompt": True},
        {"messages": [sys_m, u1], "add_generation_prompt": True, "enable_thinking": False},
        {"messages": [{"role": "user", "content": "你好 😀 <|im_end|>"}], "add_generation_prompt": True},
        {"messages": [{"role": "user", "content": ""}], "add_generation_prompt": True},
        {"messages": [sys_m], "add_generation_prompt": False},
        {"messages": [u1, a1, {"role": "assistant", "content": "More."}], "add_generation_prompt": False},
        {"messages": [u1, {"role": "assistant", "content": "calling", "reasoning_content": "\nneed data\n"},
                      {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "22C"}],
         "add_generation_prompt": True},
        {"messages": [u1, {"role": "assistant", "content": "ok", "reasoning_content": "r1"}, u2,
                      {"role": "assistant", "content": "<think>x</think>four"}], "add_generation_prompt": False},
        {"messages": [{"role": "user", "content": "<tool_response>\nr\n</tool_response>"}, a1],
         "add_generation_prompt": False},
        {"messages": [u1, {"role": "assistant", "content": "\n\n<think>\n\na\n<think>b\n\n</think>\n\nc</think>\n\nd"}],
         "add_generation_prompt": False},
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "tests/data/qwen3-tokenizer"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/data/tokenizer_cases.json"))
    args = ap.parse_args()

    import tokenizers
    tk = tokenizers.Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    texts = hand_cases() + random_cases(130)
    cases = []
    for t in texts:
        ids = tk.encode(t, add_special_tokens=False).ids
        cases.append({"text": t, "ids": ids, "nfc": unicodedata.normalize("NFC", t)})
    bad = []
    for b in invalid_utf8_cases():
        ids = tk.encode(b.decode("utf-8", "replace"), add_special_tokens=False).ids
        bad.append({"hex": b.hex(), "ids": ids})
    qwen_json = json.load(open(os.path.join(args.tokenizer, "tokenizer.json"), encoding="utf-8"))
    tiny = tiny_tokenizer(qwen_json)
    tiny_tk = tokenizers.Tokenizer.from_str(json.dumps(tiny))
    tiny_cases = [{"text": t, "ids": tiny_tk.encode(t, add_special_tokens=False).ids} for t in TINY_TEXTS]
    doc = {"generator": "tools/gen_tokenizer_cases.py", "tokenizers_version": tokenizers.__version__,
           "cases": cases, "invalid_utf8": bad, "tiny": {"tokenizer": tiny, "cases": tiny_cases}, "chat": []}
    try:
        import transformers
        hf = transformers.AutoTokenizer.from_pretrained(args.tokenizer)
        for cc in chat_cases():
            kw = {}
            if "enable_thinking" in cc:
                kw["enable_thinking"] = cc["enable_thinking"]
            text = hf.apply_chat_template(cc["messages"], tokenize=False,
                                          add_generation_prompt=cc["add_generation_prompt"], **kw)
            cc = dict(cc)
            cc["text"] = text
            doc["chat"].append(cc)
        doc["transformers_version"] = transformers.__version__
    except ImportError:
        print("transformers not installed: no chat cases", file=sys.stderr)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"{len(cases)} cases, {len(doc['chat'])} chat cases -> {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
