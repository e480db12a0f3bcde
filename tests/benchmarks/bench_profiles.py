"""Benchmark: each detector profile in configs/detectors/, end to end through the `robustlab` command.

For each seed family: build the architecture at its real input size (EfficientNetB2 @32, EfficientNetB7
+ attention @128, EfficientNetV2B0 @256, the 3-layer CNN @128; ``weights=None``: no model hub here),
train it briefly on the demo's generated real/fake images with its project's preprocessing (frozen
backbone where the project froze it), save it the way the project did, put the profile beside it, then
run, each in a fresh process as a user would:

  robustlab inspect PROFILE --json                       -> load time (model load inside the process)
  robustlab evaluate PROFILE DATA --out RUN              -> clean accuracy / AUC, wall time
  robustlab attack PROFILE DATA --eps 8/255 --fraction 1 -> FGSM adversarial + mixed accuracy, wall time

  .venv/bin/python tests/benchmarks/bench_profiles.py --out /tmp/bench-profiles [--only cnn3,effatt-b7]
      [--b7-backbone EfficientNetB0] [--epochs 3] [--n-train 60] [--n-test 20] [--unfreeze]

With ``weights=None`` and a frozen backbone (as the projects trained their heads) the features are
random and the head learns little: clean accuracy sits near chance. ``--unfreeze`` trains the whole
model, which the small ones (B2 @32, the CNN) afford on a CPU.

The CPU is shared: compare figures from one run, not across runs.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from test_profiles import FAMILIES, PROFILES  # noqa: E402

ROBUSTLAB = str(Path(sys.executable).with_name("robustlab"))

# How each project fed its model during training: input transform on uint8 RGB, target from y (fake = 1).
TRAINING = {
    "cifake-b2": (lambda x: x.astype("float32"), lambda y: y.astype("float32"), "EfficientNetB2"),
    "effatt-b7": (lambda x: x[..., ::-1].astype("float32"), lambda y: np.stack([y, 1 - y], 1).astype("float32"), "EfficientNetB7"),
    "openforensics-v2b0": (lambda x: x.astype("float32"), lambda y: (1 - y).astype("float32"), "EfficientNetV2B0"),
    "cnn3": (lambda x: x.astype("float32") / 255.0, lambda y: (1 - y).astype("float32"), ""),
}


def build_and_save(name: str, kind: str, folder: Path, *, epochs: int, n_train: int, n_test: int, seed: int, unfreeze: bool = False) -> dict[str, Any]:
    from robustlab.demo import make_images, write_split

    fam = FAMILIES[name]
    K = importlib.import_module(fam.framework)
    K.utils.set_random_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = time.time()
    model = fam.build(K, kind, fam.size) if kind else fam.build(K, size=fam.size)
    build_s = time.time() - t
    transform, target, _ = TRAINING[name]
    x, y = make_images(n_train, size=fam.size, seed=seed + 1)
    t = time.time()
    history: dict[str, Any] = {}
    if unfreeze:  # the projects' fine-tuning phase: the whole backbone trains
        for layer in model.layers:
            layer.trainable = True
    if epochs:
        loss = "categorical_crossentropy" if name == "effatt-b7" else "binary_crossentropy"
        model.compile(optimizer=K.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
        h = model.fit(transform(x), target(y), epochs=epochs, batch_size=16, verbose=0)
        history = {k: [round(float(v), 4) for v in vals] for k, vals in h.history.items()}
    train_s = time.time() - t
    fam.save(model, folder)
    import shutil

    shutil.copy(PROFILES / fam.profile, folder / fam.profile)
    xt, yt = make_images(n_test, size=fam.size, seed=seed + 2)
    write_split(folder / "data", xt, yt, "test")
    size_mb = sum(f.stat().st_size for f in folder.iterdir() if f.is_file() and f.suffix in (".h5", ".json", ".pkl")) / 1e6
    return {
        "profile": fam.profile,
        "backbone": kind or "(3-layer CNN)",
        "parameters": int(model.count_params()),
        "file_mb": round(size_mb, 1),
        "build_seconds": round(build_s, 1),
        "train_seconds": round(train_s, 1),
        "backbone_trained": bool(unfreeze) or name == "cnn3",
        "train_history": history,
        "spec": folder / fam.profile,
        "data": folder / "data",
        "trust": fam.needs_trust,
    }


def run_cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    t = time.time()
    proc = subprocess.run([ROBUSTLAB, *args], capture_output=True, text=True)
    return time.time() - t, proc


def rows_of(run_dir: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads((run_dir / "metrics.json").read_text())["rows"]
    return {r["set"] + ("" if r["set"] in ("clean", "worst-case") else f":{r['variant']}"): r for r in rows}


def measure(case: dict[str, Any], out: Path) -> dict[str, Any]:
    spec, data = str(case["spec"]), str(case["data"])
    trust = ["--trust-model"] if case["trust"] else []
    res: dict[str, Any] = {}
    wall, proc = run_cli("inspect", spec, "--json", *trust)
    if proc.returncode != 0:
        raise SystemExit(f"inspect failed: {proc.stderr.strip()}")
    report = json.loads(proc.stdout)
    res.update(inspect_wall=round(wall, 1), load_seconds=report.get("load_seconds"), loader=report.get("loader"))
    wall, proc = run_cli("evaluate", spec, data, "--out", str(out / "evaluate"), "--force", "-q", *trust)
    if proc.returncode != 0:
        raise SystemExit(f"evaluate failed: {proc.stderr.strip()}")
    clean = rows_of(out / "evaluate")["clean"]
    res.update(evaluate_wall=round(wall, 1), n=clean["n"], clean_accuracy=clean["accuracy"], clean_auc=clean["auc"])
    wall, proc = run_cli("attack", spec, data, "--method", "fgsm", "--eps", "8/255", "--fraction", "1", "--out", str(out / "attack"), "--force", "-q", *trust)
    if proc.returncode != 0:
        raise SystemExit(f"attack failed: {proc.stderr.strip()}")
    rows = rows_of(out / "attack")
    adv, mixed = rows["adversarial:fgsm"], rows["mixed:fgsm"]
    res.update(
        attack_wall=round(wall, 1),
        fgsm_accuracy=adv["accuracy"],
        fgsm_auc=adv["auc"],
        mixed_accuracy=mixed["accuracy"],
        realized_linf=adv.get("linf"),
    )
    return res


def pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-profiles"))
    ap.add_argument("--only", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    ap.add_argument("--b7-backbone", default="EfficientNetB7", help="EfficientNetB7 (64 M parameters) or a smaller one, e.g. EfficientNetB0")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=60, help="training images per class")
    ap.add_argument("--n-test", type=int, default=20, help="test images per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unfreeze", action="store_true", help="train the whole model (the projects' fine-tuning phase), not only the head")
    args = ap.parse_args()
    results = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        kind = TRAINING[name][2]
        if name == "effatt-b7":
            kind = args.b7_backbone
        folder = args.out / name
        print(f"== {name} ({kind or 'cnn'}): building and training", file=sys.stderr, flush=True)
        case = build_and_save(name, kind, folder, epochs=args.epochs, n_train=args.n_train, n_test=args.n_test, seed=args.seed, unfreeze=args.unfreeze)
        print(f"== {name}: measuring through the robustlab command", file=sys.stderr, flush=True)
        case.update(measure(case, folder))
        case = {k: (str(v) if isinstance(v, Path) else v) for k, v in case.items()}
        results.append({"family": name, **case})
        print(json.dumps(results[-1], indent=1), file=sys.stderr, flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print("| profile | backbone | params | file | loader | load s | evaluate s | attack s | n | clean acc | clean AUC | FGSM 8/255 acc | FGSM AUC | mixed acc | L-inf /255 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        loader = str(r["loader"]).split(" (fallback")[0]
        fb = " (fallback)" if "fallback" in str(r["loader"]) else ""
        auc = "n/a" if r["clean_auc"] is None else f"{r['clean_auc']:.3f}"
        print(
            f"| {r['profile']} | {r['backbone']} | {r['parameters'] / 1e6:.1f} M | {r['file_mb']} MB | {loader.split(' load')[0].split(' model')[0]}{fb} | "
            f"{r['load_seconds']} | {r['evaluate_wall']} | {r['attack_wall']} | {r['n']} | {pct(r['clean_accuracy'])} | {auc} | "
            f"{pct(r['fgsm_accuracy'])} | {'n/a' if r['fgsm_auc'] is None else format(r['fgsm_auc'], '.3f')} | {pct(r['mixed_accuracy'])} | {r['realized_linf']:.2f} |"
        )


if __name__ == "__main__":
    main()
