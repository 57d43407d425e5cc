#!/usr/bin/env python3
"""Time to detect against regression size, Dimmer's sequential analysis beside
the Argo-style reference, from `dimmer simulate --json`.

Writes bench/ttd-vs-regression.svg and prints the target table as Markdown.
Run: python3 bench/detection.py [path/to/dimmer]   (make simulate does it)
Standard library only.
"""
import json
import math
import subprocess
import sys

DIMMER = sys.argv[1] if len(sys.argv) > 1 else "target/release/dimmer"
COMMON = ["--rps", "200", "--baseline-error", "0.001", "--runs", "2000",
          "--horizon", "3600", "--seed", "1", "--json"]


def simulate(*args):
    out = subprocess.run([DIMMER, "simulate", *args, *COMMON], check=True,
                         capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def fmt(v, unit=""):
    return "–" if v is None else f"{v:.0f}{unit}"


TARGETS = [
    ("A/A, 10% split", ["--split", "0.10", "--canary-error", "0.001"], "false alarms ≤ 0.1%"),
    ("A/A, 1% split", ["--split", "0.01", "--canary-error", "0.001"], "false alarms ≤ 0.1%"),
    ("A/A, 10% split, bursty canary errors (shape 0.2)",
     ["--split", "0.10", "--canary-error", "0.001", "--burst-shape", "0.2"], "false alarms ≤ 0.5%"),
    ("10% split, canary 2% errors", ["--split", "0.10", "--canary-error", "0.02"], "median ≤ 20 s"),
    ("1% split, canary 5% errors", ["--split", "0.01", "--canary-error", "0.05"], "median ≤ 40 s"),
    ("10% split, 2× regression (0.2%)", ["--split", "0.10", "--canary-error", "0.002"], "≥ 95% detected in 1 h"),
]


def table():
    print("| scenario | target | detector | detected | false alarms | median TTD | p90 TTD | bad requests served |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name, args, target in TARGETS:
        for r in simulate(*args):
            fpr = "–" if r["fpr"] is None else f"{100 * r['fpr']:.2f}%"
            print(f"| {name} | {target} | {r['detector']} | {100 * r['detected']:.2f}% | {fpr} | "
                  f"{fmt(r['median_ttd_s'], ' s')} | {fmt(r['p90_ttd_s'], ' s')} | {r['bad_requests_served']:.1f} |")


def plot(path="bench/ttd-vs-regression.svg"):
    ratios = [1.5, 2, 3, 5, 10, 20, 50]
    series = {}
    for ratio in ratios:
        for r in simulate("--split", "0.10", "--canary-error", str(0.001 * ratio)):
            series.setdefault(r["detector"], []).append((ratio, r["median_ttd_s"], r["detected"]))
    w, h, left, bottom, top, right = 720, 440, 70, 60, 30, 30
    xmin, xmax = math.log10(1.4), math.log10(60)
    ymin, ymax = math.log10(5), math.log10(3600)

    def x(v):
        return left + (math.log10(v) - xmin) / (xmax - xmin) * (w - left - right)

    def y(v):
        return h - bottom - (math.log10(v) - ymin) / (ymax - ymin) * (h - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w/2}" y="18" text-anchor="middle" font-size="14">Median time to abort vs regression size '
             f'(200 rps, 10% split, baseline 0.1% errors, 2000 runs, seed 1)</text>']
    for t in [5, 10, 30, 60, 120, 300, 600, 1800, 3600]:
        parts.append(f'<line x1="{left}" x2="{w-right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left-6}" y="{y(t)+4:.1f}" text-anchor="end">{t} s</text>')
    for r in ratios:
        parts.append(f'<line x1="{x(r):.1f}" x2="{x(r):.1f}" y1="{top}" y2="{h-bottom}" stroke="#eee"/>')
        parts.append(f'<text x="{x(r):.1f}" y="{h-bottom+16}" text-anchor="middle">{r}×</text>')
    parts.append(f'<text x="{w/2}" y="{h-12}" text-anchor="middle">canary error rate ÷ baseline error rate</text>')
    colours = ["#1f77b4", "#d62728"]
    for i, (name, pts) in enumerate(series.items()):
        c = colours[i % 2]
        drawn = [(x(r), y(m)) for r, m, _ in pts if m is not None]
        if len(drawn) > 1:
            d = " ".join(f"{px:.1f},{py:.1f}" for px, py in drawn)
            parts.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for r, m, det in pts:
            if m is None:
                parts.append(f'<text x="{x(r):.1f}" y="{y(3600)-6:.1f}" text-anchor="middle" fill="{c}">never</text>')
            else:
                parts.append(f'<circle cx="{x(r):.1f}" cy="{y(m):.1f}" r="3.5" fill="{c}"/>')
        parts.append(f'<rect x="{left+12}" y="{top+12+18*i}" width="12" height="3" fill="{c}"/>')
        parts.append(f'<text x="{left+30}" y="{top+17+18*i}">{name}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    table()
    plot()
