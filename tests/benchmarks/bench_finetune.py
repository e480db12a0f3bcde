"""Benchmark for ``robustlab adv-train`` (not collected by pytest).

1. Seconds per epoch: plain fine-tuning (``ratio 0``) vs FGSM mixing (``ratio 0.3`` and ``1.0``) on the
   same data (the demo's train split, streamed and decoded as in a real run), epochs of the three
   interleaved in one process so that the load other processes put on the CPU hits all of them
   alike. Epoch 1 (graph tracing) is left out; medians of wall-clock and process CPU seconds of the
   training pass (the per-epoch validation and guard are the same work for every ratio).
2. The demo detector before / after adversarial fine-tuning (train on train/, validate on val/,
   report on test/): clean accuracy and accuracy under FGSM and PGD at the training eps, each
   detector at its own threshold (the new one re-picked on val/).

    python tests/benchmarks/bench_finetune.py --demo /tmp/ft-demo --out /tmp/ft-bench

``--demo`` is built with ``robustlab demo --out DEMO`` when it does not exist yet.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def ensure_demo(demo: Path) -> None:
    if not (demo / "detector" / "detector.yaml").exists():
        robustlab = Path(sys.executable).parent / "robustlab"
        subprocess.run([str(robustlab), "demo", "--out", str(demo), "--quiet"], check=True)


def timing(demo: Path, epochs: int, batch_size: int) -> dict:
    """Alternate epochs of plain / ratio 0.3 / ratio 1.0 training (three private copies of the demo
    detector) and time each training pass: wall-clock and process CPU seconds."""
    from robustlab.data import open_dataset
    from robustlab.detector.loading import load_detector
    from robustlab.training.config import FinetuneConfig
    from robustlab.training.steps import prepare_training

    train = open_dataset(demo / "data" / "train")
    ratios = (0.0, 0.3, 1.0)
    steps = {}
    for r in ratios:
        det = load_detector(demo / "detector" / "detector.yaml")
        steps[r], _ = prepare_training(det, FinetuneConfig(ratio=r, attack="fgsm", lr=1e-3, batch_size=batch_size, epochs=epochs).validated(), train)
    wall: dict[float, list[float]] = {r: [] for r in ratios}
    cpu: dict[float, list[float]] = {r: [] for r in ratios}
    for epoch in range(1, epochs + 1):
        for r in ratios:
            t, c = time.perf_counter(), time.process_time()
            steps[r].train_epoch(train, epoch)
            t, c = time.perf_counter() - t, time.process_time() - c
            if epoch > 1:  # epoch 1 traces the graphs
                wall[r].append(t)
                cpu[r].append(c)
            print(f"  epoch {epoch} ratio {r:g}: {t:.2f} s wall, {c:.2f} s CPU", flush=True)
    med = {r: {"wall": statistics.median(wall[r]), "cpu": statistics.median(cpu[r])} for r in ratios}
    return {
        "images": len(train),
        "epochs_timed_per_ratio": epochs - 1,
        "median_seconds": {f"ratio={r:g}": m for r, m in med.items()},
        "ratio_vs_plain": {f"ratio={r:g}": {k: med[r][k] / med[0.0][k] for k in ("wall", "cpu")} for r in ratios if r},
    }


def before_after(demo: Path, out: Path, args: argparse.Namespace) -> dict:
    from robustlab.detector.loading import load_detector
    from robustlab.training.config import FinetuneConfig
    from robustlab.training.run import adv_train

    det = load_detector(demo / "detector" / "detector.yaml")
    config = FinetuneConfig(eps=args.eps, epochs=args.epochs, ratio=args.ratio, attack=args.attack, lr=args.lr, batch_size=args.batch_size, seed=0)
    t = time.time()
    result = adv_train(
        det, demo / "data" / "train", demo / "data" / "val", test=demo / "data" / "test", out=out / "new", config=config, force=True,
        log=lambda s: print("  " + s, flush=True),
    )
    rows = {(r["set"], r["variant"]): r for r in result.comparison}
    pick = {"clean": ("clean", "none"), "fgsm": ("adversarial", "fgsm"), "pgd": ("adversarial", "pgd")}
    return {
        "config": config.to_dict(),
        "seconds": round(time.time() - t, 1),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "threshold_after": result.threshold,
        "accuracy": {name: {"before": rows[key]["accuracy_before"], "after": rows[key]["accuracy_after"], "change_pts": 100 * rows[key]["accuracy_delta"]} for name, key in pick.items()},
        "out": str(result.out),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("/tmp/ft-demo"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/ft-bench"))
    ap.add_argument("--timing-epochs", type=int, default=6, help="epochs per ratio (the first, tracing, is not timed)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--attack", default="fgsm")
    ap.add_argument("--eps", type=float, default=8 / 255)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    ensure_demo(args.demo)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    if not args.skip_timing:
        print("seconds per epoch, plain vs FGSM mixing (interleaved):", flush=True)
        report["timing"] = timing(args.demo, args.timing_epochs, args.batch_size)
    if not args.skip_demo:
        print("demo detector before / after adversarial fine-tuning:", flush=True)
        report["demo"] = before_after(args.demo, args.out, args)
    (args.out / "bench_finetune.json").write_text(json.dumps(report, indent=2) + "\n")
    if "timing" in report:
        t = report["timing"]
        print(f"\nseconds per training epoch ({t['images']} images, median of {t['epochs_timed_per_ratio']} interleaved epochs):")
        print("| run | wall s/epoch | x plain | CPU s/epoch | x plain |\n| --- | --- | --- | --- | --- |")
        for key, m in t["median_seconds"].items():
            rel = t["ratio_vs_plain"].get(key, {"wall": 1.0, "cpu": 1.0})
            name = "plain fine-tuning" if key == "ratio=0" else f"FGSM mixing {key}"
            print(f"| {name} | {m['wall']:.2f} | {rel['wall']:.2f}x | {m['cpu']:.2f} | {rel['cpu']:.2f}x |")
    if "demo" in report:
        d = report["demo"]
        print(f"\ndemo ({d['config']['attack']} ratio {d['config']['ratio']:g}, eps {d['config']['eps']:.4f}, {d['config']['epochs']} epochs max, kept epoch {d['best_epoch']}, threshold after {d['threshold_after']:.4f}):")
        print("| accuracy | before | after | change |\n| --- | --- | --- | --- |")
        for name, a in d["accuracy"].items():
            print(f"| {name} | {100 * a['before']:.2f}% | {100 * a['after']:.2f}% | {a['change_pts']:+.2f} pts |")
    print(f"\nwritten: {args.out / 'bench_finetune.json'}")


if __name__ == "__main__":
    main()
