#!/usr/bin/env python3
"""Writes tests/golden/tokenizers/<style>/: small byte-level BPE tokenizer.json files trained here
with the Hugging Face `tokenizers` library, and what that library encodes and decodes with them,
for tests/data/tokenizer_test.cc (STYLE.md item 6).

The real GPT-2 / Llama-3 / Qwen2 files cannot be downloaded here (no hub access), so each style is
rebuilt with the same components and options as the real file, trained on a small corpus written
below:

  gpt2    ByteLevel pre-tokenizer (GPT-2 regex, add_prefix_space false), ByteLevel decoder and
          post-processor, <|endoftext|> (special, normalized, also in model.vocab as in GPT-2),
          merges written as "a b" strings (the legacy form the real file uses).
  llama3  Split(Llama-3 regex, Isolated) + ByteLevel(use_regex false), ignore_merges true,
          Llama-3's special tokens, a ByteLevel + TemplateProcessing (BOS) post-processor, and a few
          whole words added to the vocabulary without merges, so ignore_merges changes the result.
  qwen2   NFC normalizer, Split(Qwen2 regex, Isolated) + ByteLevel(use_regex false), ChatML tokens.
  flags   not a real model: every added-token option the C++ loader implements (lstrip, rstrip,
          single_word, normalized, non-special tokens), ByteLevel with add_prefix_space true and a
          Sequence[NFC] normalizer.

Each <style>/golden.json records the tokenizers version, the vocabulary size, the special tokens'
ids, ~70 test strings (none from the training corpus) with encode(text, add_special_tokens=False)
ids and decode(ids, skip_special_tokens=False), and decode of hand-picked id lists (bytes that do
not form UTF-8, unknown ids). Everything is computed from the tokenizer.json as re-read from disk.

Run: /tmp/golden-venv/bin/python scripts/make_golden_tokenizers.py  (needs `pip install tokenizers`;
the version used is printed and written into every golden.json). Two runs give identical files.
"""
import argparse
import json
import os
import random
import sys

try:
    import tokenizers
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors, trainers)
except ImportError as e:
    sys.exit(f"make_golden_tokenizers.py: {e}. Install the Hugging Face tokenizers library: "
             "pip install tokenizers")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "golden", "tokenizers")

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# ---------------------------------------------------------------------------------------------
# Training corpus: English, code, numbers, whitespace runs, accented / CJK / RTL / Indic text,
# decomposed accents (so NFC matters), emoji with skin tones, flags and ZWJ sequences.
# ---------------------------------------------------------------------------------------------
WORDS = """the of and to in is was for that with as on by at from his her they we you it this
which be are have has had not but or an all one their there been were when who will more no if
out so said what up its about into than them can only other new some could time these two may
then do first any my now such like our over man me even most made after also did many before
must through back years where much your way well down should because each just those people how
too little state good very make world still own see men work long get here between both life being
under never day same another know while last might us great old year off come since against go
came right used take three states himself few house use during without again place around however
home small found thought went say part once general high upon school every does got united left
number course war until always away something fact though water less public put think almost hand
enough far took head yet government system better set told nothing night end why called didn eyes
find going look asked later knew point next program city business give group toward young days let
room president side social present given several order national possible rather second face per
among form important often things looking early large big need four within felt along children
saw best church ever least power development light thing seemed family interest want members mind
country area others done turned although open god service certain kind problem began different door
thus help sense means whole matter perhaps itself york times human law line above name example
company hands local show whether five history gave today either act feet across taken past quite
anything seen having death experience body word half really field week car words already themselves
information tell together college shall money period held keep sure free real seems behind cannot
""".split()

PROSE = [
    "It was the best of times, it was the worst of times; it was the age of wisdom.",
    "The quick brown fox jumps over the lazy dog. The five boxing wizards jump quickly!",
    "She said, \"I don't think we'll make it before noon,\" and he replied: \"We'd better try.\"",
    "They're sure you've seen it; I'm certain he'd agree. Isn't that what we'd all want?",
    "Mr. Smith (aged 42) paid $1,250.75 on 2023-11-05 for 3 tickets -- a 15% discount.",
    "Q: What's 7 x 8? A: 56. Q: And 123 + 456? A: 579, obviously...",
    "Tokenizers split text into pieces; byte-level BPE never needs an unknown token.",
    "HELLO WORLD! THIS IS LOUD. Don'T ShOuT, WE'RE LISTENING; YOU'LL SEE, THEY'VE HEARD.",
]

CODE = [
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.append(x)\n",
    "#include <stdio.h>\n\nint main(int argc, char **argv) {\n\tfor (int i = 0; i < argc; ++i) {\n"
    "\t\tprintf(\"%s\\n\", argv[i]);\n\t}\n\treturn 0;\n}\n",
    "const add = (a, b) => a + b;\nconsole.log(`sum: ${add(2, 3)}`);\nlet xs = [1, 2, 3].map(x => x * 2);\n",
    "{\"name\": \"strata\", \"version\": \"0.1.0\", \"deps\": [\"absl\", \"pcre2\"], \"ok\": true, \"n\": null}\n",
    "SELECT id, name FROM users WHERE age >= 18 AND status = 'active' ORDER BY name LIMIT 10;\n",
    "#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.txt; do\n  wc -l \"$f\" >> counts.log\ndone\n",
    "<div class=\"row\">\n  <span id=\"x\">&lt;tag&gt; &amp; more</span>\n</div>\n",
    "if (x != nullptr && y->size() > 0) { return x[i] << 2 | mask; } else { throw std::runtime_error(\"bad\"); }\n",
    "    # indented comment\n        deeper = {'k': [1, 2, {'z': None}]}  # trailing\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).filter(|x| x % 2 == 0).collect();\n    println!(\"{:?}\", v);\n}\n",
]

UNICODE = [
    "Les élèves français étudient à l'école. Où est la bibliothèque ? C'était très intéressant.",
    "Größere Straßen führen über die Brücke. Übung macht den Meister; Äpfel und Öl.",
    "El niño comió una piña en la mañana. ¿Dónde está el señor? ¡Qué día tan bonito!",
    "A ação da população não é fácil; coração, informação, você e avô.",
    "Tiếng Việt có nhiều dấu: người, được, những, không, của, trường học.",
    "Το γρήγορο καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο. Ελληνικά γράμματα.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю. Привет, мир!",
    "我们今天去公园散步，天气非常好。机器学习和自然语言处理是很有趣的领域。",
    "日本語の文章を書きます。ひらがな、カタカナ、漢字が混ざっています。東京は大きい都市です。",
    "한국어 문장입니다. 안녕하세요, 만나서 반갑습니다. 오늘 날씨가 좋네요.",
    "مرحبا بالعالم. هذه جملة باللغة العربية مع أرقام ١٢٣ و ٤٥٦.",
    "שלום עולם. זה משפט בעברית עם מילים נוספות.",
    "नमस्ते दुनिया। यह हिन्दी में एक वाक्य है। भारत एक बड़ा देश है।",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Math: α + β = γ, ∑ᵢ xᵢ² ≤ ∞, ∀x ∃y: x ≠ y, √2 ≈ 1.414, ½ ¾ ⅓, ℕ ⊂ ℤ ⊂ ℝ.",
    "Symbols © ® ™ § ¶ † ‡ • … ‰ ′ ″ € £ ¥ ₹ ₩ ← → ↑ ↓ ★ ☆ ♠ ♥ ♦ ♣",
    "Full-width ＡＢＣ１２３ and ｶﾀｶﾅ, ligatures ﬁ ﬂ, Kelvin K, Ohm Ω, Angstrom Å.",
]

# Decomposed accents: NFC composes these (the qwen2 and flags styles must see the composed form).
DECOMPOSED = [
    "Cafe\u0301 na\u0131\u0308ve re\u0301sume\u0301 cre\u0300me bru\u0302le\u0301e",
    "Tie\u0302\u0301ng Vie\u0323\u0302t, ngu\u031bo\u031b\u0300i, A\u030angstro\u0308m, n\u0303",
    "e\u0301 e\u0301 e\u0301 o\u0308 u\u0308 a\u0308 \u1100\u1161\u11a8 (Hangul jamo)",
]

EMOJI = [
    "I love it 😍😍😍 so much! 👍🏽👍🏿 Great job 🎉🎊",
    "Family: 👨‍👩‍👧‍👦 👩‍❤️‍👨 👨🏻‍💻 🧑🏾‍🚀 🏳️‍🌈 🏴‍☠️",
    "Flags 🇺🇸 🇯🇵 🇫🇷 🇧🇷, keycaps 1️⃣ 2️⃣ #️⃣, hearts ❤️ 💔 💙, weather ☀️ 🌧️",
    "Faces 😀 😃 😄 😁 😆 😅 🤣 😂 🙂 🙃 😉 😊 😇 🥰 🤔 🤯 🥳",
]


def make_corpus(seed=1234):
    rng = random.Random(seed)
    lines = []
    lines += PROSE * 6 + CODE * 5 + UNICODE * 5 + DECOMPOSED * 4 + EMOJI * 4
    for _ in range(2500):  # generated sentences
        n = rng.randint(4, 16)
        ws = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            ws[0] = ws[0].capitalize()
        if rng.random() < 0.15:
            ws[rng.randrange(n)] = ws[rng.randrange(n)].upper()
        if rng.random() < 0.2:
            ws.insert(rng.randrange(n), rng.choice(["don't", "it's", "we're", "I've", "you'll",
                                                     "she'd", "I'm", "can't", "they'd"]))
        sep = rng.choice([" ", " ", " ", "  ", "\t"])
        end = rng.choice([".", ".", "!", "?", ",", ";", ":", "..."])
        lines.append(sep.join(ws) + end)
    for _ in range(600):  # numbers
        kind = rng.randrange(6)
        if kind == 0:
            lines.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
        elif kind == 1:
            lines.append(f"{rng.uniform(-1000, 1000):.{rng.randint(1, 6)}f}")
        elif kind == 2:
            lines.append(f"{rng.randint(1900, 2099)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
        elif kind == 3:
            lines.append(f"0x{rng.getrandbits(32):08x} 0b{rng.getrandbits(8):08b}")
        elif kind == 4:
            lines.append(f"{rng.randint(1, 999)},{rng.randint(0, 999):03d},{rng.randint(0, 999):03d}")
        else:
            lines.append(f"+1 ({rng.randint(200, 999)}) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}")
    for _ in range(300):  # whitespace runs, tabs, newlines
        indent = rng.choice(["", " ", "  ", "    ", "        ", "\t", "\t\t", " \t "])
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
        tail = rng.choice(["", " ", "   ", "\t"])
        nl = rng.choice(["\n", "\n\n", "\r\n", "\n\n\n", " \n"])
        lines.append(indent + body + tail + nl + indent + rng.choice(WORDS))
    rng.shuffle(lines)
    return lines


# ---------------------------------------------------------------------------------------------
# Test strings: none from the corpus; the same list for every style (a special token of one
# style is plain text in another).
# ---------------------------------------------------------------------------------------------
TEST_STRINGS = [
    "",
    "Hello, world!",
    "hello world",
    " Hello",
    "Hello ",
    "   leading and trailing spaces   ",
    "a" + " " * 40 + "b",
    " " * 300,
    "\t\t\tindented with tabs\tand\tinner\ttabs",
    "line one\nline two\r\nline three\n\n\nline six\n",
    "\n",
    " \n \n ",
    "\r\n\r\n  \r\n",
    "1234567",
    "12345678901234567890",
    "3.14159 and 2,718,281 and -0.5e-10",
    "x=42;y=1000000;z=007",
    "Arabic-Indic digits ١٢٣٤٥ and fractions ½ ⅔ and superscripts x² y³ Ⅻ",
    "I'm sure you're right, they've gone, we'll see, he'd know, it's fine, don't worry",
    "I'M SURE YOU'RE RIGHT, THEY'VE GONE, WE'LL SEE, HE'D KNOW, IT'S FINE",
    "'s 't 're 've 'm 'll 'd 'x 'S 'T 'RE 'Ve 'mL 'LL ''",
    "rock'n'roll o'clock y'all ma'am",
    "def square(x):\n    return x ** 2  # the square\n\n\nprint(square(12))\n",
    "int main() { std::vector<int> v{1, 2, 3}; return v.size() == 3 ? 0 : 1; }",
    "if (a && b || !c) { x += 1; } else if (d >= 10) { y <<= 2; }",
    "<html><body class=\"main\"><p>Text &amp; more</p></body></html>",
    "{\"key\": [1, 2.5, \"three\", null, true], \"nested\": {\"a\": {}}}",
    "email: someone@example.com, url: https://example.org/path?q=1&r=two#frag",
    "naïve café résumé façade jalapeño",
    "Ελληνικό κείμενο με τόνους",
    "Русский текст для проверки токенизатора.",
    "日本語のテキストです。カタカナとひらがな。",
    "中文测试：标点符号，数字123，英文ABC。",
    "한국어 텍스트와 숫자 42",
    "العربية: النص من اليمين إلى اليسار",
    "עברית עם ניקוד: שָׁלוֹם",
    "हिन्दी पाठ की जाँच",
    "ภาษาไทยทดสอบ",
    "e\u0301",
    "Cafe\u0301 cre\u0300me bru\u0302le\u0301e",
    "A\u030a \u212b \u2126 \u212a",
    "\u1e9b\u0323 q\u0307\u0323 \u0344",
    # tokenizers' NFC has Unicode 9.0 tables: marks from later versions neither reorder nor compose
    "e\u1ac0\u0357 a\u0345\u1df6 o\u0308\u0301",
    # letters and digits from Unicode 15-16 (Kirat Rai, Garay, CJK ext. I) next to single_word tokens
    "\U00016d40\U00016d41zyzzyva \U0002ebf3cat cat\U000116d1 \U00010d40\U00010d41 x\u180ey",
    "ﬁancée ﬂower ＦＵＬＬ ｗｉｄｔｈ",
    "👍",
    "👍🏽👍🏿",
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈 and 🏴‍☠️",
    "👋🏽 wave 🙂🙃",
    "🇺🇸🇯🇵🇩🇪",
    "❤️ ♥ ❤",
    "nbsp:a\u00a0b ideographic:a\u3000b em:a\u2003b narrow:a\u202fb",
    "nel:x\u0085y mongolian:x\u180ey zwsp:x\u200by",
    "vt:a\x0bb ff:a\x0cb fs:a\x1cb us:a\x1fb",
    "line sep:a\u2028b para sep:a\u2029b",
    "controls \x00\x01\x02\x7f end",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "abababababababababababababab",
    "!!!!!!!!!!!!!!!!!!!!............----------==========",
    "Hello<|endoftext|>world",
    "<|endoftext|><|endoftext|>",
    "text <|endoftext|> more text",
    "<|endoftext",
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|end_of_text|> and <|reserved_special_token_0|>x",
    "zyzzyva STRATA zyzzyvas",
    "a cat sat; concatenate cat. cats cat_1 (cat)",
    "x <mask> y  <mask>z",
    "[SEP]   tail [SEP]\nnext",
    "a  <|both|>  b<|both|>c",
    "hello world and hello  world",
    "e\u0301te\u0301 and \u00e9t\u00e9 and e\u0301t\u00e9",
    "Mixed: The year 2024 had 366 days; 1,000,000 people paid €5,99 or ¥1000 — wow… “quotes” ‘single’",
    ("A longer paragraph to exercise many merges: the quick brown fox jumps over the lazy dog, "
     "while 12 wizards box 345 quickly; naïve coöperation reëlects the café's maître d'. "
     "Numbers 2718281828 and 31415926535 follow.\n\tTabs\tand  double  spaces  stay.  "),
]

# Raw byte sequences whose byte-level tokens are decoded one by one (lossy UTF-8 decoding).
DECODE_BYTES = [
    b"\xe2",
    b"\xe2\x82",
    b"\xe2\x82A",
    b"\xf0\x9f\x98",
    b"\x80",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"\xff\xfe",
    b"ok\xe2\x82\xacok",
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def train(style, corpus):
    if style == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        vocab_size = 1500
    elif style == "llama3":
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        vocab_size = 2000
    elif style == "qwen2":
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        vocab_size = 1500
    elif style == "flags":
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.Sequence([normalizers.NFC()])
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        vocab_size = 600
    else:
        raise ValueError(style)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)

    if style == "gpt2":
        tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=True)])
    elif style == "llama3":
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in [
            "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|reserved_special_token_2|>", "<|eot_id|>"]])
    elif style == "qwen2":
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    elif style == "flags":
        tok.add_special_tokens([
            AddedToken("<|endoftext|>", special=True, normalized=False),
            AddedToken("<mask>", special=True, normalized=False, lstrip=True),
            AddedToken("[SEP]", special=True, normalized=False, rstrip=True),
            AddedToken("<|both|>", special=True, normalized=False, lstrip=True, rstrip=True),
        ])
        tok.add_tokens([
            AddedToken("cat", single_word=True, normalized=False),
            AddedToken("e\u0301te\u0301", normalized=True),  # matched as NFC "été"
            AddedToken("hello world", normalized=False),
            AddedToken("zyzzyva", normalized=True, single_word=True),
        ])

    j = json.loads(tok.to_str())
    model = j["model"]
    if style == "gpt2":
        # As in GPT-2's file: <|endoftext|> is the last model.vocab entry too, merges are strings.
        model["vocab"]["<|endoftext|>"] = j["added_tokens"][0]["id"]
        model["merges"] = [" ".join(m) for m in model["merges"]]
    if style == "llama3":
        model["ignore_merges"] = True
        # Whole words without merges that build them: with ignore_merges they are one token.
        nxt = len(model["vocab"])
        assert all(t["id"] >= nxt for t in j["added_tokens"]), "added tokens follow the vocabulary"
        shift = 0
        for w in ["zyzzyva", "\u0120zyzzyva", "\u0120STRATA"]:
            assert w not in model["vocab"]
            model["vocab"][w] = nxt + shift
            shift += 1
        for t in j["added_tokens"]:
            t["id"] += shift
        bos = next(t["id"] for t in j["added_tokens"] if t["content"] == "<|begin_of_text|>")
        j["post_processor"] = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos],
                                                      "tokens": ["<|begin_of_text|>"]}}}]}
    return j


def write_json_lines(path, obj, list_keys):
    """JSON with one list element per line for the keys in list_keys (readable diffs), ASCII only."""
    parts = []
    for k, v in obj.items():
        if k in list_keys:
            inner = ",\n".join("    " + json.dumps(e, ensure_ascii=True) for e in v)
            parts.append(f"  {json.dumps(k)}: [\n{inner}\n  ]")
        else:
            parts.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=True)}")
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write("{\n" + ",\n".join(parts) + "\n}\n")


def make_style(style, corpus, out_dir):
    j = train(style, corpus)
    d = os.path.join(out_dir, style)
    os.makedirs(d, exist_ok=True)
    tok_path = os.path.join(d, "tokenizer.json")
    with open(tok_path, "w", encoding="utf-8", newline="\n") as f:
        # Compact (the real files are indented; the C++ loader reads both): keeps the files small.
        json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")

    tok = Tokenizer.from_file(tok_path)  # everything below comes from the file as written
    b2u = bytes_to_unicode()
    vocab = tok.get_vocab(with_added_tokens=True)
    cases = []
    for s in TEST_STRINGS:
        ids = tok.encode(s, add_special_tokens=False).ids
        cases.append({"text": s, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    decode_cases = []
    for raw in DECODE_BYTES:
        ids = [vocab[b2u[b]] for b in raw]
        decode_cases.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    special = [t for t in j["added_tokens"]]
    mixed = [vocab[b2u[ord("a")]], special[0]["id"], 10 ** 7, vocab[b2u[ord("b")]]]
    decode_cases.append({"ids": mixed, "decoded": tok.decode(mixed, skip_special_tokens=False)})
    all_added = [t["id"] for t in special]
    decode_cases.append({"ids": all_added, "decoded": tok.decode(all_added, skip_special_tokens=False)})

    golden = {
        "tokenizers_version": tokenizers.__version__,
        "style": style,
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "added_tokens": {t["content"]: t["id"] for t in special},
        "cases": cases,
        "decode_cases": decode_cases,
    }
    write_json_lines(os.path.join(d, "golden.json"), golden, {"cases", "decode_cases"})
    return tok_path, len(cases)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT, help="output folder (default: tests/golden/tokenizers)")
    args = ap.parse_args()
    print(f"tokenizers {tokenizers.__version__}")
    corpus = make_corpus()
    print(f"corpus: {len(corpus)} lines, {sum(len(l.encode()) for l in corpus)} bytes")
    total = 0
    for style in ["gpt2", "llama3", "qwen2", "flags"]:
        path, n = make_style(style, corpus, args.out)
        size = os.path.getsize(path) + os.path.getsize(os.path.join(os.path.dirname(path), "golden.json"))
        total += size
        print(f"{style}: {n} cases, {size} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
