"""Time and size of report.html for a run with 50 rows and 10,000 predictions.

    .venv/bin/python tests/benchmarks/bench_report.py [--out /tmp/bench-report] [--reuse]

Builds a real run (no synthetic rows): 280 demo images (32x32, 140 per class), a small CNN trained
for 2 epochs, FGSM at 12 eps values (1..12/255, ART) on a stratified 250 of them, and 24 corruption
sets (jpeg/blur/resize/noise 1-5, social 1-4). Rows: clean + 12 adversarial + 12 mixed + 24
corrupted + worst-case = 50. Predictions: 280 + 12 * 250 + 24 * 280 = 10,000.

Then times ``report_run(RUN, formats="html")`` (in process, median of 5), the other formats, and
the whole ``robustlab report RUN`` command (a fresh process, median of 3), and breaks the size of
report.html down into plots, example images and the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def build_run(out: Path) -> float:
    import numpy as np

    from robustlab.attacks.variant import parse_attacks
    from robustlab.corruptions.variant import parse_corruptions
    from robustlab.data import open_dataset
    from robustlab.demo import build_model, make_images, train_model
    from robustlab.detector.loading import load_detector
    from robustlab.evaluation.pipeline import evaluate

    work = out.parent / f"{out.name}-inputs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    x, y = make_images(140, size=32, seed=5)
    xt, yt = make_images(300, size=32, seed=6)
    np.savez(work / "test.npz", x=x, y=y)
    model = build_model(32)
    train_model(model, xt, yt, epochs=2, seed=0)
    model.save(work / "model.keras")
    (work / "detector.yaml").write_text("name: bench-cnn\nmodel: model.keras\nscale: '0-1'\noutput: sigmoid\nclasses: [fake]\n", encoding="utf-8")
    det = load_detector(work / "detector.yaml")
    data = open_dataset(work / "test.npz")
    eps = ",".join(f"{k}/255" for k in range(1, 13))
    variants = parse_attacks([f"fgsm:eps={eps}"]) + parse_corruptions(["jpeg:1-5", "blur:1-5", "resize:1-5", "noise:1-5", "social:1-4"])
    t = time.perf_counter()
    evaluate(det, data, out=out, variants=variants, attack_fraction=125 / 140, force=True, batch_size=64)
    return time.perf_counter() - t


def sizes(html: str) -> dict[str, int]:
    imgs = re.findall(r'<img class="(\w+)" src="([^"]+)"', html)
    plot = sum(len(s) for c, s in imgs if c == "plot")
    example = sum(len(s) for c, s in imgs if c == "example")
    return {"total": len(html.encode("utf-8")), "plots": plot, "examples": example, "rest": len(html.encode("utf-8")) - plot - example, "images": len(imgs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/robustlab-bench-report/run")
    ap.add_argument("--reuse", action="store_true", help="use an existing run at --out")
    args = ap.parse_args()
    out = Path(args.out)
    if not (args.reuse and (out / "run.json").is_file()):
        secs = build_run(out)
        print(f"built the run in {secs:.1f} s (evaluate, including its own report.html)")
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    n_pred = sum(1 for _ in open(out / "predictions.csv")) - 1
    print(f"run: {out}  rows: {len(rows)}  predictions: {n_pred}")

    from robustlab.reporting.publish import report_run

    report_run(out, formats="html", out=out.parent / "warmup")  # imports, caches
    for fmts, reps in (("html", 5), ("md", 5), ("json", 5), ("html,md,json", 3)):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            report_run(out, formats=fmts, out=out.parent / "reports")
            times.append(time.perf_counter() - t)
        print(f"report_run(formats={fmts!r}): median {statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f}, n={reps})")
    cli = []
    exe = Path(sys.executable).with_name("robustlab")
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([str(exe), "report", str(out), "--out", str(out.parent / "cli"), "-q"], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        cli.append(time.perf_counter() - t)
    print(f"robustlab report RUN (fresh process, html,md,json): median {statistics.median(cli):.2f} s (min {min(cli):.2f}, n=3)")
    html = (out.parent / "reports" / "report.html").read_text(encoding="utf-8")
    s = sizes(html)
    print(
        f"report.html: {s['total'] / 1024:.0f} KiB ({s['total']} bytes): plots {s['plots'] / 1024:.0f} KiB, "
        f"example images {s['examples'] / 1024:.0f} KiB, tables and text {s['rest'] / 1024:.0f} KiB; {s['images']} inlined images"
    )
    print(f"evaluate's own report.html: {(out / 'report.html').stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
