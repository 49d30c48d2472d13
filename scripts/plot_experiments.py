#!/usr/bin/env python3
"""Plot the experiment of BENCHMARKS.md (results JSONL from scripts/experiments.sh) as an SVG:
held-out student perplexity per variant, one dot per seed, a bar at the mean, the CE-only mean
as a dashed line. Standard library only.

usage: python3 scripts/plot_experiments.py results.jsonl out.svg [baseline variant, default ce]
"""
import json
import statistics
import sys

ORDER = ["ce", "fkl", "rkl", "jsd", "sfkl", "srkl", "tv", "fkl_curriculum", "fkl_cache", "noise_nofilter", "noise_filter",
         "cur_root_ce", "cur_root_ce_soft", "cur_linear_entropy", "cur_step_length", "cur_self_paced", "cur_order", "cur_order_root"]
LABEL = {"ce": "CE only", "fkl": "forward KL", "rkl": "reverse KL", "jsd": "JSD(0.5)", "sfkl": "skew fwd KL",
         "srkl": "skew rev KL", "tv": "total var.", "fkl_curriculum": "fKL + curric.", "fkl_cache": "fKL, top-32 cache",
         "noise_nofilter": "30% junk, no filter", "noise_filter": "30% junk, filtered",
         "cur_root_ce": "root, teacher CE", "cur_root_ce_soft": "root, CE, w 0.5", "cur_linear_entropy": "linear, entropy",
         "cur_step_length": "step, length", "cur_self_paced": "self-paced", "cur_order": "easy-to-hard order",
         "cur_order_root": "order + root 0.5"}
SEED_COLOR = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    by = {}
    for r in rows:
        if "student_ppl" in r:
            by.setdefault(r["variant"], {})[r["seed"]] = r["student_ppl"]
    variants = [v for v in ORDER if v in by]
    seeds = sorted({s for d in by.values() for s in d})
    vals = [x for d in by.values() for x in d.values()]
    lo, hi = min(vals) - 0.05, max(vals) + 0.05
    w, h, left, top, bottom = 900, 460, 70, 40, 150
    step = (w - left - 110) / len(variants)
    y = lambda p: top + (hi - p) / (hi - lo) * (h - top - bottom)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w/2}" y="20" text-anchor="middle" font-size="14">Held-out student perplexity, quickstart corpus, 300 x 16 x 128 tokens, {len(seeds)} seeds</text>']
    t = lo
    while t <= hi:
        out.append(f'<line x1="{left}" x2="{w-20}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left-6}" y="{y(t)+4:.1f}" text-anchor="end">{t:.2f}</text>')
        t += 0.05
    base = sys.argv[3] if len(sys.argv) > 3 else "ce"
    ce = statistics.mean(by[base].values()) if base in by else None
    if ce:
        out.append(f'<line x1="{left}" x2="{w-20}" y1="{y(ce):.1f}" y2="{y(ce):.1f}" stroke="#555" stroke-dasharray="5,4"/>')
    for i, v in enumerate(variants):
        cx = left + step * (i + 0.5)
        m = statistics.mean(by[v].values())
        out.append(f'<line x1="{cx-step*0.3:.1f}" x2="{cx+step*0.3:.1f}" y1="{y(m):.1f}" y2="{y(m):.1f}" stroke="black" stroke-width="3"/>')
        for j, s in enumerate(seeds):
            if s in by[v]:
                out.append(f'<circle cx="{cx-10+10*j:.1f}" cy="{y(by[v][s]):.1f}" r="4" fill="{SEED_COLOR[j % 5]}"/>')
        out.append(f'<text transform="translate({cx:.1f},{h-bottom+12}) rotate(40)" font-size="12">{LABEL.get(v, v)}</text>')
    for j, s in enumerate(seeds):
        out.append(f'<circle cx="{left+10+70*j}" cy="{h-12}" r="4" fill="{SEED_COLOR[j % 5]}"/><text x="{left+18+70*j}" y="{h-8}">seed {s}</text>')
    out.append(f'<text x="{left+250}" y="{h-8}">bar: mean; dashed: {LABEL.get(base, base)} mean</text>')
    out.append("</svg>")
    open(sys.argv[2], "w").write("\n".join(out))


if __name__ == "__main__":
    main()
