#!/usr/bin/env python3
"""The tables and the JSON file of scripts/bench.sh, from the raw figures it recorded.

Input: records.tsv (round, target, workload, metric, unit, better, value, seconds: one raw
figure a line), failures.tsv (round, target, workload), targets.tsv (name, kind, description)
and the run's metadata as options. Output: on stdout, the median of each figure per target over
the rounds, the median over rounds of each target's ratio to the baseline measured in the same
round, and the spread of each figure; in --json, all of it plus every raw figure.
"""
import argparse
import json
import statistics
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--records", required=True)
    p.add_argument("--failures", required=True)
    p.add_argument("--targets", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--baseline", default="")
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--quick", type=int, default=0)
    p.add_argument("--started", default="")
    p.add_argument("--elapsed", type=int, default=0)
    p.add_argument("--load-start", default="")
    p.add_argument("--load-end", default="")
    p.add_argument("--round-loads", default="")
    p.add_argument("--sizes", default="")
    p.add_argument("--commit", default="")
    return p.parse_args()


def read_tsv(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def loads(text):
    return [float(x) for x in text.split()] if text else []


def fmt(value):
    """A figure with about four significant digits, no exponent."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}" if value < 1 else f"{value:.2f}"


def print_table(title, header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print(title)
    for n, row in enumerate([header] + rows):
        cells = [str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(row)]
        print("  " + "  ".join(cells))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print()


def main():
    a = parse_args()
    targets = [{"name": t[0], "kind": t[1], "description": t[2]} for t in read_tsv(a.targets)]
    names = [t["name"] for t in targets]
    results = []
    for r in read_tsv(a.records):
        results.append({"round": int(r[0]), "target": r[1], "workload": r[2], "metric": r[3],
                        "unit": r[4], "better": r[5], "value": float(r[6]),
                        "seconds": float(r[7]) if len(r) > 7 and r[7] else None})
    failures = [{"round": int(f[0]), "target": f[1], "workload": f[2]} for f in read_tsv(a.failures)]

    # Figures in the order they were first recorded (workload order, then metric order).
    figures = []
    info = {}
    by = {}  # (figure, target) -> {round: value}
    for r in results:
        key = f'{r["workload"]}.{r["metric"]}'
        if key not in info:
            figures.append(key)
            info[key] = (r["unit"], r["better"])
        by.setdefault((key, r["target"]), {})[r["round"]] = r["value"]

    medians = {t: {} for t in names}
    spreads = {t: {} for t in names}
    ratios = {t: {} for t in names}
    for key in figures:
        for t in names:
            vals = list(by.get((key, t), {}).values())
            if vals:
                med = statistics.median(vals)
                medians[t][key] = med
                spreads[t][key] = (max(vals) - min(vals)) / med if med else None
            if a.baseline and t != a.baseline:
                base = by.get((key, a.baseline), {})
                per_round = [v / base[rnd] for rnd, v in by.get((key, t), {}).items() if base.get(rnd)]
                if per_round:
                    ratios[t][key] = statistics.median(per_round)

    def label(key):
        unit, better = info[key]
        return f'{key} ({unit}, {"higher" if better == "higher" else "lower"} is better)'

    rounds_done = sorted({r["round"] for r in results})
    print(f"rounds: {a.rounds}{' (quick sizes)' if a.quick else ''}; elapsed {a.elapsed} s; "
          f"load average start {a.load_start}, end {a.load_end}")
    for t in targets:
        print(f'  {t["name"]:<10} {t["description"]}')
    print()
    print_table(f"median of {len(rounds_done)} round(s)", ["figure"] + names,
                [[label(k)] + [fmt(medians[t].get(k)) for t in names] for k in figures])
    if a.baseline:
        others = [t for t in names if t != a.baseline]
        if others:
            print_table(f"ratio to {a.baseline} (median of the per-round ratios; >1 = the figure is "
                        f"larger than {a.baseline}'s)", ["figure"] + others,
                        [[label(k)] + [f"{ratios[t][k]:.2f}" if k in ratios[t] else "-" for t in others]
                         for k in figures])
    if len(rounds_done) > 1:
        print_table("spread over rounds ((max - min) / median)", ["figure"] + names,
                    [[k] + [f"{spreads[t][k]:.0%}" if spreads[t].get(k) is not None else "-" for t in names]
                     for k in figures])
    if failures:
        print("FAILED (figures missing):")
        for f in failures:
            print(f'  round {f["round"]}: {f["workload"]} on {f["target"]}')

    doc = {
        "started": a.started,
        "elapsed_s": a.elapsed,
        "commit": a.commit,
        "rounds": a.rounds,
        "quick": bool(a.quick),
        "sizes": dict(kv.split("=", 1) for kv in a.sizes.split()),
        "load_average": {"start": loads(a.load_start), "end": loads(a.load_end),
                         "round_start": [loads(x) for x in a.round_loads.split(";") if x]},
        "targets": targets,
        "baseline": a.baseline or None,
        "figures": [{"name": k, "unit": info[k][0], "better": info[k][1]} for k in figures],
        "results": results,
        "failures": failures,
        "medians": medians,
        "ratios_to_baseline": {t: v for t, v in ratios.items() if t != a.baseline},
    }
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"raw figures: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
