"""Cost of a row's operating-point metrics and bootstrap intervals at 10k and 100k predictions.

    .venv/bin/python tests/benchmarks/bench_metrics.py [--resamples 1000] [--repeat 3]

For each size: a real score vector (two overlapping classes, 60% real, scores rounded to 6
decimals as predictions.csv keeps them), timed ``metrics_row`` with ``bootstrap=0`` (the row without
intervals, operating points included) and with ``bootstrap=N`` (median of ``--repeat``), and the
bootstrap alone (:func:`robustlab.metrics.bootstrap_intervals`). Prints one JSON line per size.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's robustlab


def main() -> None:
    import numpy as np

    from robustlab.metrics import bootstrap_intervals, metrics_row

    ap = argparse.ArgumentParser()
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for n in (10_000, 100_000):
        rng = np.random.default_rng(0)
        y = (rng.random(n) < 0.4).astype(np.int64)
        s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(6)

        def timed(fn) -> float:
            out = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
            return statistics.median(out)

        plain = timed(lambda: metrics_row(y, s, threshold=0.5, set="clean"))
        full = timed(lambda: metrics_row(y, s, threshold=0.5, set="clean", bootstrap=args.resamples))
        boot = timed(lambda: bootstrap_intervals(y, s, threshold=0.5, resamples=args.resamples))
        print(json.dumps({"predictions": n, "resamples": args.resamples, "row_without_intervals_s": round(plain, 3), "row_with_intervals_s": round(full, 3), "bootstrap_only_s": round(boot, 3)}))


if __name__ == "__main__":
    main()
