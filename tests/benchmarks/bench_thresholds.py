"""Benchmark for robustlab.evaluation.thresholds (not collected by pytest).

Part 1, agreement with scikit-learn: on many synthetic validation sets (sizes 20..20000, scores
rounded to 1..6 decimals so that ties and plateaus are common) compare

* max-f1: our F1 vs the maximum F1 over ``precision_recall_curve``; is our threshold one of its
  thresholds; the F1 that ``robustlab.metrics.binary_scores`` gives at our threshold vs the F1 we
  report (the threshold reproduces its F1);
* youden: our J vs max(TPR - FPR) over ``roc_curve``;
* precision:P / recall:R: our recall / precision vs the best over sklearn's curve points that meet
  the target;
* how often our threshold equals sklearn-style ``thresholds[argmax(f1)]`` (that picks the LOWEST
  of tied thresholds; robustlab documents the highest) - differences are ties only;
* time to pick, and to bootstrap 1000 resamples.

Part 2, the demo detector (``--demo DIR``, made by ``robustlab demo --out DIR``): thresholds each
strategy picks on the ``val`` split (with the bootstrap interval) and the rows on the ``test``
split at each: clean, and adversarial / mixed / worst-case under FGSM (robustlab.attacks, through
robustlab.evaluation.engine) when the attacks module is there.

    .venv/bin/python tests/benchmarks/bench_thresholds.py [--demo /tmp/thr-demo] [--attack fgsm:eps=2/255,8/255]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def agreement(trials: int = 400) -> None:
    from sklearn.metrics import precision_recall_curve, roc_curve

    from robustlab.evaluation.thresholds import (
        ThresholdUnreachable,
        bootstrap_threshold,
        pick_threshold,
    )
    from robustlab.metrics import binary_scores

    rng = np.random.default_rng(0)
    worst = {"f1_vs_sklearn": 0.0, "f1_reproduced": 0.0, "youden_vs_sklearn": 0.0, "precision_target": 0.0, "recall_target": 0.0}
    in_sklearn = same_as_argmax = total = exact_ties = unreachable_ok = unreachable = 0
    for _ in range(trials):
        n = int(rng.choice([20, 60, 200, 600, 2000, 20000]))
        decimals = int(rng.integers(1, 7))
        y = rng.integers(0, 2, n)
        y[:2] = (0, 1)
        sep = rng.uniform(0.0, 0.5)
        s = np.clip(rng.normal(0.5 + sep * (y - 0.5), 0.2), 0, 1).round(decimals)
        prec, rec, thr = precision_recall_curve(y, s)
        p, r = prec[:-1], rec[:-1]
        f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)
        c = pick_threshold(y, s, "max-f1")
        total += 1
        in_sklearn += c.threshold in thr
        other = thr[np.argmax(f1)]
        same_as_argmax += c.threshold == other
        if c.threshold != other:  # then sklearn's pick must be an exact tie (in counts) and lower
            tie_tp = int(np.sum((s >= other) & (y == 1)))
            tie_fp = int(np.sum((s >= other) & (y == 0)))
            exact_ties += 2 * tie_tp / (2 * tie_tp + tie_fp + (y.sum() - tie_tp)) == c.f1 and other < c.threshold
        worst["f1_vs_sklearn"] = max(worst["f1_vs_sklearn"], abs(c.f1 - f1.max()))
        worst["f1_reproduced"] = max(worst["f1_reproduced"], abs(binary_scores(y, s, threshold=c.threshold)["f1"] - c.f1))
        fpr, tpr, _ = roc_curve(y, s)
        worst["youden_vs_sklearn"] = max(worst["youden_vs_sklearn"], abs(pick_threshold(y, s, "youden").youden - (tpr - fpr).max()))
        for target in (0.7, 0.9, 0.99):
            ok = p >= target
            try:
                cp = pick_threshold(y, s, f"precision:{target}")
                worst["precision_target"] = max(worst["precision_target"], abs(cp.recall - r[ok].max()))
            except ThresholdUnreachable:
                unreachable += 1
                unreachable_ok += not ok.any()
            cr = pick_threshold(y, s, f"recall:{target}")
            worst["recall_target"] = max(worst["recall_target"], abs(cr.precision - p[r >= target].max()))
    print(f"## Agreement with scikit-learn ({total} synthetic validation sets, n 20..20000, scores rounded to 1..6 decimals)")
    for k, v in worst.items():
        print(f"  max |difference| {k:18s} {v:.3g}")
    print(f"  max-f1 threshold is one of precision_recall_curve's thresholds: {in_sklearn}/{total}")
    print(f"  equal to thresholds[argmax(f1)]: {same_as_argmax}/{total}; the others are exact F1 ties where argmax took a lower threshold: {exact_ties}/{total - same_as_argmax}")
    print(f"  precision targets refused as unreachable: {unreachable}, of which sklearn's curve has no point meeting them: {unreachable_ok}")
    y = rng.integers(0, 2, 600)
    s = np.clip(rng.normal(0.5 + 0.3 * (y - 0.5), 0.2), 0, 1)
    t = time.perf_counter()
    for _ in range(100):
        pick_threshold(y, s, "max-f1")
    pick_ms = (time.perf_counter() - t) / 100 * 1e3
    t = time.perf_counter()
    bootstrap_threshold(y, s, "max-f1", n=1000)
    boot_s = time.perf_counter() - t
    y2 = rng.integers(0, 2, 20000)
    s2 = np.clip(rng.normal(0.5 + 0.3 * (y2 - 0.5), 0.2), 0, 1)
    t = time.perf_counter()
    bootstrap_threshold(y2, s2, "max-f1", n=1000)
    boot2_s = time.perf_counter() - t
    print(f"  time: pick on 600 scores {pick_ms:.2f} ms; bootstrap 1000 resamples: {boot_s:.2f} s on 600, {boot2_s:.2f} s on 20000 scores")


def demo(root: str, attack: str | None, batch_size: int) -> None:
    from robustlab.data import open_dataset
    from robustlab.detector.loading import load_detector
    from robustlab.evaluation.engine import build_rows, evaluate
    from robustlab.evaluation.selection import select_threshold
    from robustlab.evaluation.thresholds import DEFAULT_THRESHOLD
    from robustlab.reporting.tables import param_display

    det = load_detector(os.path.join(root, "detector", "detector.yaml"))
    val = open_dataset(os.path.join(root, "data"), split="val")
    test = open_dataset(os.path.join(root, "data"), split="test")
    variants = []
    if attack:
        try:
            from robustlab.attacks.variant import parse_attack
        except ImportError:
            print("(robustlab.attacks is not there: no adversarial rows)")
        else:
            variants = parse_attack(attack)
    t = time.perf_counter()
    result = evaluate(det, test, variants=variants, attack_fraction=1.0, batch_size=batch_size)
    print(f"\n## Demo detector {root}: test split {len(test)} images, scored clean{' + ' + attack if variants else ''} in {time.perf_counter() - t:.1f} s")
    strategies = ["max-f1", "precision:0.99", "precision:0.999", "recall:0.99", "recall:0.999", "youden", f"fixed:{DEFAULT_THRESHOLD:g}"]
    print("\n### Thresholds picked on the val split (600 images)\n")
    print("| strategy | threshold | plateau | val precision | val recall | val F1 | bootstrap 95% interval |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    picked = []
    for strategy in strategies:
        sel = select_threshold(det, val, strategy, data=test, bootstrap=1000, batch_size=batch_size)
        c, b = sel.choice, sel.interval
        low = "-" if c.plateau_low is None else f"{c.plateau_low:.4f}"
        print(f"| {strategy} | {c.threshold:.4f} | ({low}, {c.threshold:.4f}] | {c.precision:.4f} | {c.recall:.4f} | {c.f1:.4f} | [{b.low:.4f}, {b.high:.4f}] |")
        picked.append((strategy, c.threshold))
        if strategy == "max-f1" and c.plateau_low is not None:
            # for comparison only: the middle of the plateau (same validation predictions)
            picked.append(("max-f1, plateau middle (comparison)", (c.plateau_low + c.threshold) / 2))
    print("\n### Test-split rows at each threshold\n")
    print("| strategy | threshold | row | n | accuracy | precision | recall | F1 | misclassified |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"

    for strategy, thr in picked:
        for r in build_rows(result.y, result.scores, result.idx, result.variant_stats, thr, worst_case=bool(variants)):
            print(f"| {strategy} | {thr:.4f} | {r.set} {r.variant if r.variant != 'none' else ''} {param_display(r.param)} | {r.n} | {pct(r.accuracy)} | {pct(r.precision)} | {pct(r.recall)} | {pct(r.f1)} | {r.misclassified} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", help="a folder made by `robustlab demo --out DIR`")
    ap.add_argument("--attack", default="fgsm:eps=2/255,8/255", help="attack spec for the adversarial rows ('' for none)")
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    agreement(args.trials)
    if args.demo:
        demo(args.demo, args.attack or None, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
