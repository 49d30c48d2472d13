#!/usr/bin/env python3
"""Write a random Llama-layout Hugging Face folder of a chosen size in bf16 (standard library
only; no torch): for memory and speed measurements of teacher loading, not for parity (the
parity fixtures come from transformers, scripts/make_hf_fixtures.py). The shapes of the
loading benchmark (head dim 64, hidden / 256 KV heads, vocab 1,024, the llama-gqa fixture's
tokenizer) given to scripts/make_random_hf_teacher.py, which writes the folder.

usage: python3 scripts/make_synthetic_hf.py out_dir [hidden 1024] [layers 16] [intermediate 2816]
"""
import os
import runpy
import sys

out = sys.argv[1]
hidden = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
layers = int(sys.argv[3]) if len(sys.argv) > 3 else 16
inter = int(sys.argv[4]) if len(sys.argv) > 4 else 2816
here = os.path.dirname(os.path.abspath(__file__))
fixture = os.path.join(here, "..", "tests", "fixtures", "hf", "llama-gqa")
args = [hidden, layers, inter, hidden // 64, max(1, hidden // 256), 1024]
sys.argv = ["make_random_hf_teacher.py", out, fixture, *map(str, args)]
runpy.run_path(os.path.join(here, "make_random_hf_teacher.py"), run_name="__main__")
