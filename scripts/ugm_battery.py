#!/usr/bin/env python3
"""Writes fixtures/ugm-battery-llamacpp.json: llama.cpp's token ids for a battery of inputs on
the XLM-R Unigram vocabulary, for tests/tokenizer_ugm.rs.

usage: ugm_battery.py LLAMA_TOKENIZE MODEL_GGUF OUT_JSON

LLAMA_TOKENIZE is llama.cpp's llama-tokenize (or a driver taking the same -m/-p arguments that
calls libllama's llama_tokenize the same way) as vendored in the PyPI sdist
llama_cpp_python==0.3.36 (vendor/llama.cpp; cmake -DGGML_NATIVE=ON -DLLAMA_CURL=OFF).
Each input runs on its own: llama-tokenize -m MODEL -p INPUT --ids --no-escape --log-disable
(bos/eos added per the file's flags, special-token text parsed)."""
import hashlib, json, os, subprocess, sys

INPUTS = [
    # NFKC through the precompiled charsmap
    "ＡＢＣ ｆｕｌｌ－ｗｉｄｔｈ １２３！",
    "ﬁnance ﬂow ﬀ ﬃ ligatures",
    "① ② ⑩ ⑳ circled",
    "㍿ ㌔ ㎏ ㎞ squares",
    "Ⅻ ½ x² H₂O ™ ℃ № compatibility",
    "ｶﾀｶﾅ ﾊﾟﾝ half-width katakana",
    "e\u0301 combining acute, é precomposed, \u212b angstrom sign",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐛𝐨𝐥𝐝 math letters",
    "ß straße STRASSE İstanbul déjà vu",
    # whitespace
    "a  b   c",
    "   leading spaces",
    "trailing spaces   ",
    "\ttab\tseparated\t",
    "line1\nline2\n\nline3\n",
    "windows\r\nline\r\nends",
    " ",
    "\n",
    "non\u00a0breaking\u00a0space",
    "ideographic\u3000space",
    "zero\u200bwidth\u200djoiner",
    "line\u2028separator",
    # scripts
    "我爱北京天安门",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "สวัสดีครับ",
    "Привет, мир!",
    "Γειά σου Κόσμε",
    "שלום עולם",
    "Hello世界123",
    # emoji and characters outside the vocabulary (unknown runs)
    "👍🏽 family 👨\u200d👩\u200d👧 flag 🇯🇵",
    "𓀀𓀁𓀂 hieroglyphs",
    "\ue000\ue001 private use",
    "bell\x07char and del\x7f",
    "꙰꙱ and ⸻ and 〄",
    # special-token text in the input
    "<s>",
    "</s>",
    "<s>hello</s>",
    "a <mask> b",
    "<mask>",
    "<pad><unk>",
    "x<s>y</s>z",
    "[PAD250001] unused token",
    "<s <s> s>",
    # the rest
    "",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "1234567890 3.14159 -42 1e-9",
    "C'est l'été; «guillemets» „Anführung“",
]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    tool, model, out = sys.argv[1:]
    cases = []
    for text in INPUTS:
        # llama-tokenize refuses an empty -p; the empty input goes through --stdin instead.
        prompt = ["-p", text] if text else ["--stdin"]
        r = subprocess.run(
            [tool, "-m", model, *prompt, "--ids", "--no-escape", "--log-disable"],
            input="", capture_output=True, text=True, check=True,
        )
        line = r.stdout.strip().splitlines()[-1]
        cases.append({"input": text, "ids": json.loads(line)})
    sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
    source = ("llama.cpp as vendored in the PyPI sdist llama_cpp_python==0.3.36 (sha256 "
              "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e, vendor/llama.cpp, "
              "cmake -DGGML_NATIVE=ON -DLLAMA_CURL=OFF)")
    if os.path.basename(tool) == "llama-tokenize":
        how = (f"{source}: llama-tokenize -m MODEL -p INPUT --ids --no-escape --log-disable, one "
               "input per run (the empty input through --stdin; bos and eos per the file's flags, "
               "special-token text parsed).")
    else:
        how = (f"{source}: its libllama called as llama-tokenize calls it (vocab_only load, "
               "llama_tokenize with add_special = the vocabulary's add_bos and parse_special = true), "
               f"by a small driver ({os.path.basename(tool)}) while llama-tokenize was still building, "
               "one input per run.")
    doc = {
        "how": how + " Written by scripts/ugm_battery.py.",
        "model": {"file": os.path.basename(model), "sha256": sha},
        "cases": cases,
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


main()
