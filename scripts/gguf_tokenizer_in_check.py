#!/usr/bin/env python3
"""The tokenizer.json `distill tokenizer` rebuilds from a GGUF file gives llama.cpp's ids.

    python3 scripts/gguf_tokenizer_in_check.py <distill binary> <model.gguf> [--keep DIR]

`distill tokenizer` writes the tokenizer.json; `tokenizers` (PyPI) encodes the texts of
scripts/gguf_tokenizer_check.py with it, and llama.cpp (scripts/llama-cpp/tokenize.mjs:
node-llama-cpp's prebuilt CPU build; `npm install` there once) with the GGUF itself. Then texts
holding the file's own special tokens, both ways llama.cpp reads them:

- `parse_special = false` (tokenize.mjs, as every `llama_tokenize` caller that tokenizes plain
  text): control tokens are text like any other, user-defined tokens still match whole. In
  `tokenizers` that is `encode_special_tokens = True`.
- `parse_special = true` (llama.cpp's prompts after a chat template): every special token
  matches whole, which is what the tokenizer.json does by default.

No BOS either way (node-llama-cpp's tokenize never adds one). Prints one row per text and exits
1 unless every id list is equal.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gguf_tokenizer_check import TEXTS  # noqa: E402

LLAMA_CPP = os.path.join(HERE, "llama-cpp")
# tokenize.mjs with parse_special = true, written beside the texts (node-llama-cpp's binary
# check refuses to run under `node -e`), importing node-llama-cpp from scripts/llama-cpp.
TOKENIZE_SPECIAL = """
import {readFileSync} from "node:fs";
import {getLlama} from "%s";
const [path, textsPath] = process.argv.slice(2);
const texts = JSON.parse(readFileSync(textsPath, "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: path, vocabOnly: true});
console.log(JSON.stringify({ids: texts.map((t) => [...model.tokenize(t, true)])}));
await model.dispose();
"""


def llama_cpp(gguf, texts, work, special):
    path = os.path.join(work, "texts.json")
    json.dump(texts, open(path, "w"), ensure_ascii=False)
    script = os.path.join(LLAMA_CPP, "tokenize.mjs")
    if special:
        package = pathlib.Path(LLAMA_CPP, "node_modules", "node-llama-cpp", "dist", "index.js").as_uri()
        script = os.path.join(work, "tokenize_special.mjs")
        open(script, "w").write(TOKENIZE_SPECIAL % package)
    r = subprocess.run(["node", script, gguf, path], cwd=LLAMA_CPP, check=True, capture_output=True, text=True)
    return json.loads(r.stdout)["ids"]


def special_texts(tok_json):
    """Texts around the file's added tokens: the first few control ones and any user-defined."""
    added = json.load(open(tok_json))["added_tokens"]
    control = [t["content"] for t in added if t["special"]][:3]
    user = [t["content"] for t in added if not t["special"]][:2]
    texts = []
    for s in control + user:
        texts += [f"{s}", f"a{s}b", f" {s} x {s}\n{s}", f"Hello{s}  world 123{s}"]
    if len(control) >= 2:
        texts.append(f"{control[1]}user\nWhat is 2+2?{control[2 % len(control)]}\n{control[1]}assistant\n")
    return texts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("gguf")
    ap.add_argument("--keep", help="work here (kept) instead of a temporary directory")
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="distill-gguf-tok-in-")
    os.makedirs(work, exist_ok=True)
    gguf = os.path.abspath(a.gguf)
    tok_json = os.path.join(work, "tokenizer.json")
    r = subprocess.run([a.binary, "tokenizer", gguf, "--out", tok_json], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"distill tokenizer failed ({r.returncode}): {r.stderr.strip()}")
    print(r.stdout.strip())

    specials = special_texts(tok_json)
    runs = [("plain", TEXTS, False), ("special, parse_special=false", specials, False),
            ("special, parse_special=true", specials, True)]
    failed = False
    print(f"{'#':>3} {'mode':<28} {'tokens':>6}  {'equal':<5}  text")
    for mode, texts, special in runs:
        theirs = llama_cpp(gguf, texts, work, special)
        hf = Tokenizer.from_file(tok_json)
        hf.encode_special_tokens = not special
        ours = [hf.encode(t, add_special_tokens=False).ids for t in texts]
        for i, (t, o, l) in enumerate(zip(texts, ours, theirs)):
            same = o == l
            failed |= not same
            shown = json.dumps(t, ensure_ascii=False)
            print(f"{i:>3} {mode:<28} {len(l):>6}  {'yes' if same else 'NO':<5}  {shown[:70]}")
            if not same:
                print(f"      tokenizers {o}\n      llama.cpp  {l}")
    print("all equal" if not failed else "DIFFERENT")
    if not a.keep:
        shutil.rmtree(work)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
