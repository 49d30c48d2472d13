#!/usr/bin/env python3
"""llama.cpp tokenizes as the Hugging Face tokenizer does, for each pre-tokenizer our GGUF
export names (`tokenizer.ggml.pre`): GPT-2's, Llama 3's (`llama-bpe`) and Qwen2's (`qwen2`).

    python3 scripts/gguf_tokenizer_check.py <distill binary> [--keep DIR]

For each: a copy of the llama-gqa fixture (tests/fixtures/hf) whose tokenizer.json carries that
pre-tokenizer as the model family's own tokenizer.json spells it (Llama 3: Split on its regex,
then ByteLevel without one, ignore_merges; Qwen2: its regex, NFC), a two-step `distill run`
with it as the teacher (tokenizer `teacher`) exporting `gguf-f16`; then llama.cpp
(scripts/llama-cpp/tokenize.mjs: node-llama-cpp's prebuilt CPU build; `npm install` there once)
tokenizes the texts below with the GGUF's vocabulary, and `tokenizers` (PyPI) with the
tokenizer.json. Every id list must be equal. Exit 1 otherwise.

The fixture's vocabulary (1,024 tokens of simple English) merges no digits and no
upper-case contraction, so the three splits would give the same ids on any text; its last five
tokens are replaced by digit groups and `'S` (with their merges), so that the splits differ
(GPT-2 groups a run of digits, Llama 3 cuts it by threes, Qwen2 digit by digit; only the
latter two take `'S` as a contraction). The script checks that every two pre-tokenizers give
different ids on some text here: a GGUF naming the wrong one would fail.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "tests", "fixtures", "hf", "llama-gqa")
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
# Digits in runs (split by threes or one by one), contractions in both cases, runs of spaces,
# tabs and newlines before and after words, punctuation runs, non-ASCII letters and emoji
# (byte tokens here), leading and trailing whitespace.
TEXTS = [
    "Once upon a time, there was a little dog.",
    "I'm sure you'll see: they've gone, WE'LL STAY, she'd say.",
    "In 2024 there were 1234567 stars and 3.14159 pies; call 555-0100!",
    "  two leading spaces and    four inside",
    "tabs\tand\t\ttabs\nnew line\n\n\nthree\r\nwindows",
    "trailing spaces   ",
    "...!!!??? (brackets) [square] {curly} <angle> x=1+2*3/4",
    "Ünïcödé çàfé naïve résumé — 日本語のテキスト 🙂👍",
    "don't DON'T Don'T o'clock rock'n'roll",
    "\n leading newline",
    "a",
    "",
    "The little dog said \"hello\" to Tom and his friend Emma.",
    "123 2345 4567 123456 12",
    "IT'S HERE, IT'S MINE, she's",
]


# Tokens that tell the splits apart, in place of the fixture's last five; each with its merge.
EXTRA = [("1", "2"), ("12", "3"), ("4", "5"), ("45", "6"), ("'", "S")]


def extend(tok):
    vocab, merges = tok["model"]["vocab"], tok["model"]["merges"]
    last = sorted(vocab.items(), key=lambda kv: kv[1])[-len(EXTRA):]
    gone = {t for t, _ in last}
    for t, _ in last:
        del vocab[t]
    pair = lambda m: m if isinstance(m, list) else m.split(" ")
    merges[:] = [m for m in merges if not ({"".join(pair(m)), *pair(m)} & gone)]
    for (a, b), (_, i) in zip(EXTRA, last):
        assert a in vocab and b in vocab, (a, b)
        vocab[a + b] = i
        merges.append([a, b])
    return tok


def variant(name, tok):
    tok = extend(tok)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    split = lambda pattern: {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
    if name == "llama-bpe":
        tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [split(LLAMA3), byte_level]}
        tok["model"]["ignore_merges"] = True
    elif name == "qwen2":
        tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [split(QWEN2), byte_level]}
        tok["normalizer"] = {"type": "NFC"}
    return tok


RECIPE = """[run]
name = "{name}"
out_dir = "{out}"
seed = 1
[data]
source = "synthetic"
synthetic_docs = 60
seq_len = 32
[tokenizer]
kind = "teacher"
[teacher]
kind = "hf"
path = "{teacher}"
[student.model]
d_model = 32
n_layers = 1
n_heads = 4
n_kv_heads = 2
d_ff = 64
max_seq_len = 64
[optim]
batch_size = 4
steps = 2
warmup_steps = 1
[eval]
every_steps = 2
batches = 1
[checkpoint]
every_steps = 2
[export]
formats = ["gguf-f16"]
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--keep", help="work here (kept) instead of a temporary directory")
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="distill-gguf-tok-")
    os.makedirs(work, exist_ok=True)
    texts = os.path.join(work, "texts.json")
    json.dump(TEXTS, open(texts, "w"), ensure_ascii=False)
    failed = False
    reference = {}
    for name in ["gpt-2", "llama-bpe", "qwen2"]:
        teacher = os.path.join(work, f"teacher-{name}")
        shutil.rmtree(teacher, ignore_errors=True)
        shutil.copytree(FIXTURE, teacher)
        tj = os.path.join(teacher, "tokenizer.json")
        json.dump(variant(name, json.load(open(tj))), open(tj, "w"), ensure_ascii=False)
        recipe = os.path.join(work, f"{name}.toml")
        open(recipe, "w").write(RECIPE.format(name=name, out=work, teacher=teacher))
        shutil.rmtree(os.path.join(work, name), ignore_errors=True)
        subprocess.run([a.binary, "run", recipe, "--quiet"], check=True, capture_output=True)
        gguf = os.path.join(work, name, "export", "model.f16.gguf")
        r = subprocess.run(["node", os.path.join(HERE, "llama-cpp", "tokenize.mjs"), gguf, texts],
                           check=True, capture_output=True, text=True)
        theirs = json.loads(r.stdout)
        hf = Tokenizer.from_file(tj)
        ours = [hf.encode(t, add_special_tokens=False).ids for t in TEXTS]
        bad = [(t, o, l) for t, o, l in zip(TEXTS, ours, theirs["ids"]) if o != l]
        tokens = sum(len(o) for o in ours)
        print(f"{name:>9}: tokenizer.ggml.pre = {theirs['pre']!r}; {len(TEXTS)} texts, {tokens} tokens: "
              f"{'all equal' if not bad and theirs['pre'] == name else 'DIFFERENT'}")
        for t, o, l in bad:
            print(f"    {t!r}\n      tokenizers {o}\n      llama.cpp  {l}")
        failed |= bool(bad) or theirs["pre"] != name
        reference[name] = ours
    names = list(reference)
    for i, a_ in enumerate(names):
        for b_ in names[i + 1:]:
            differ = sum(x != y for x, y in zip(reference[a_], reference[b_]))
            print(f"{a_} and {b_} differ on {differ} of {len(TEXTS)} texts")
            failed |= differ == 0
    if not a.keep:
        shutil.rmtree(work)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
