#!/usr/bin/env python3
"""Human-written English from Python's own documentation, with nothing downloaded: the
docstrings of the standard library's public modules, classes and functions (what `pydoc`
shows), one JSONL document each, for `data.source = "jsonl"`.

    python3 scripts/python_docs_corpus.py out.jsonl [--min-chars 300]

Deterministic for one Python version (modules and members in sorted order); documents are
deduplicated. Modules that cannot be imported here (GUI, platform-specific) are skipped."""
import argparse
import importlib
import inspect
import json
import pkgutil
import sys
import warnings

SKIP = ("test", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "this", "antigravity")


def modules():
    names = sorted(set(sys.stdlib_module_names))
    for name in names:
        if name.startswith("_") or name.startswith(SKIP):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield importlib.import_module(name)
        except Exception:
            continue


def docs(mod):
    yield inspect.getdoc(mod)
    for name, obj in sorted(vars(mod).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield inspect.getdoc(obj)
            if inspect.isclass(obj):
                for m, f in sorted(vars(obj).items()):
                    if not m.startswith("_") and inspect.isfunction(f):
                        yield inspect.getdoc(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--min-chars", type=int, default=300)
    a = ap.parse_args()
    seen, n, chars = set(), 0, 0
    with open(a.out, "w") as f:
        for mod in modules():
            for d in docs(mod):
                if not d or len(d) < a.min_chars or d in seen:
                    continue
                seen.add(d)
                f.write(json.dumps({"text": d}) + "\n")
                n, chars = n + 1, chars + len(d)
    print(f"{a.out}: {n} documents, {chars / 1e6:.2f} M characters (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
