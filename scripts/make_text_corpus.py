#!/usr/bin/env python3
"""Write a large plain-text corpus (documents separated by blank lines) for the streaming
data-preparation benchmark: seeded sentences over a 5,000-word vocabulary, with 2% exact
duplicates. usage: python3 scripts/make_text_corpus.py out.txt [megabytes]"""
import random
import sys

out, mb = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1024
rng = random.Random(7)
letters = "etaoinshrdlucmfwypvbgkjqxz"
words = ["".join(rng.choice(letters[: 8 + i % 18]) for _ in range(2 + i % 8)) for i in range(5000)]
target, written, recent = mb << 20, 0, []
with open(out, "w") as f:
    while written < target:
        if recent and rng.random() < 0.02:
            doc = rng.choice(recent)
        else:
            sents = []
            for _ in range(rng.randint(3, 8)):
                s = " ".join(rng.choice(words) for _ in range(rng.randint(6, 14)))
                sents.append(s[0].upper() + s[1:] + ".")
            doc = " ".join(sents)
            recent = (recent + [doc])[-100:]
        f.write(doc + "\n\n")
        written += len(doc) + 2
