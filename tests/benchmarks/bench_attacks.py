"""FGSM throughput benchmark (run by hand; not collected by pytest).

    python tests/benchmarks/bench_attacks.py --detector /tmp/demo/detector/detector.yaml \
        --data /tmp/demo/data --split test [--n 600] [--batch-size 32] [--eps 8/255] [--rounds 3]
    python tests/benchmarks/bench_attacks.py --efficientnet 128 --data /tmp/demo/data --split test --n 192

Same detector, batch size, eps and images for every path, measured in one process with the paths
interleaved round by round (other processes load the CPU; the ratios are what count):

* ``handwritten``: a ``tf.function`` GradientTape FGSM over ``detector.class_logits`` (the same
  differentiable wrapper, softmax cross-entropy on the two logits), ``x + eps * sign(grad)``,
  clipped to [0, 1] and delivered as uint8, all in one graph. It does NOT score the adversarial
  images. ``+ scoring`` also scores them with ``detector.scores`` (one forward pass: what a
  hand-made FGSM test set needs for its adversarial row, and what robustlab's success check does).
  Neither computes norms, PSNR or SSIM.
* ``art-plain``: ART's ``FastGradientMethod`` over ART's stock ``TensorFlowV2Classifier``
  (eager ``loss_gradient``), delivered as uint8.
* ``run_attack``: ``robustlab.attacks.run_attack`` (ART FGSM over the compiled classifier + the
  bookkeeping: budget projection, uint8 delivery, success, L-inf/L2, PSNR, SSIM).
* ``robustlab attack``: the command itself (in-process, ``--fraction 1``): the attack stage
  (``run.json`` timings: attack + scoring of the delivered images, as evaluate does) and the whole
  command wall time (decoding the PNGs, clean scoring, the attack, saving every adversarial PNG,
  tables and plots).

Prints images per second for each and the ratios to both hand-written baselines, then where the
command's attack stage spends its time (``run.json`` attack record ``seconds``: compiled gradient,
ART's own work, delivery + norms + PSNR, SSIM, success check; the rest is evaluate's per-batch
handling), next to the hand-written FGSM and a bare ``detector.scores`` call, in ms per image.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np


def handwritten_fgsm(detector, eps: float):
    import tensorflow as tf

    h, w = detector.input_size

    @tf.function(input_signature=[tf.TensorSpec((None, h, w, 3), tf.uint8), tf.TensorSpec((None,), tf.int64)], autograph=False)
    def fgsm(x_uint8, y):
        x = tf.cast(x_uint8, tf.float32) / 255.0
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = detector.class_logits(x, training=False)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        g = tape.gradient(loss, x)
        x_adv = tf.clip_by_value(x + eps * tf.sign(g), 0.0, 1.0)
        return tf.cast(tf.round(x_adv * 255.0), tf.uint8)

    def run(x, y):
        return fgsm(tf.constant(x), tf.constant(y)).numpy()

    return run


def handwritten_fgsm_scored(detector, eps: float):
    gen = handwritten_fgsm(detector, eps)

    def run(x, y):
        adv = gen(x, y)
        return adv, detector.scores(adv)

    return run


def art_plain_fgsm(detector, eps: float, batch_size: int):
    from robustlab.attacks.art_backend import _art, art_classifier

    art = _art()
    clf = art_classifier(detector, compiled=False)
    attack = art["FGSM"](clf, norm=np.inf, eps=eps, eps_step=eps, targeted=False, batch_size=batch_size)

    def run(x, y):
        x01 = x.astype(np.float32) / np.float32(255.0)
        adv = attack.generate(x01, y=np.eye(2, dtype=np.float32)[y])
        return np.clip(np.rint(adv * 255.0), 0, 255).astype(np.uint8)

    return run


def robustlab_run_attack(detector, eps: float):
    from robustlab.attacks.art_backend import run_attack
    from robustlab.attacks.spec import AttackSpec

    spec = AttackSpec("fgsm", eps)

    def run(x, y):
        return run_attack(detector, x, y, spec, np.random.default_rng(0)).images

    return run


def efficientnet_detector(size: int) -> str:
    """A detector.yaml for EfficientNetB0 (random init, ImageNet-style 0-255 input) + Dense(sigmoid)."""
    import keras

    root = Path(tempfile.mkdtemp(prefix="bench-effnet-"))
    keras.utils.set_random_seed(0)
    base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
    model = keras.Model(base.input, keras.layers.Dense(1, activation="sigmoid")(base.output))
    model.save(root / "model.keras")
    (root / "detector.yaml").write_text(f"name: effnet-b0-{size}\nmodel: model.keras\nscale: '0-255'\noutput: sigmoid\nclasses: [fake]\n", encoding="utf-8")
    return str(root / "detector.yaml")


def time_path(fn, x, y, batch_size: int) -> float:
    t = time.perf_counter()
    for s in range(0, len(x), batch_size):
        fn(x[s : s + batch_size], y[s : s + batch_size])
    return time.perf_counter() - t


def cli_attack(detector: str, data: str, split: str | None, eps: str, batch_size: int, out: Path) -> tuple[float, float, int, dict[str, float]]:
    """(attack-stage seconds, whole-command seconds, images, run_attack's seconds per stage) of one
    ``robustlab attack`` run."""
    from click.testing import CliRunner

    from robustlab.cli import main

    args = ["attack", detector, data, "--method", "fgsm", "--eps", eps, "--fraction", "1", "--out", str(out), "--batch-size", str(batch_size), "--quiet"]
    if split:
        args += ["--split", split]
    t = time.perf_counter()
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    wall = time.perf_counter() - t
    if res.exit_code != 0:
        raise SystemExit(f"robustlab attack failed ({res.exit_code}): {res.output}")
    info = json.loads((out / "run.json").read_text())
    stage = sum(info["timings"]["variants_seconds"].values())
    return stage, wall, int(info["attacked"]), info["attacks"][0]["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default=None)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--efficientnet", type=int, metavar="SIZE", default=None, help="instead of --detector: an EfficientNetB0 (weights=None) + sigmoid detector at SIZE x SIZE, saved to a temporary folder")
    args = ap.parse_args()
    if args.efficientnet:
        args.detector = efficientnet_detector(args.efficientnet)

    from robustlab.data import open_dataset
    from robustlab.detector.loading import load_detector
    from robustlab.metrics import parse_fraction

    eps = parse_fraction(args.eps)
    det = load_detector(args.detector)
    data = open_dataset(args.data, split=args.split)
    n = min(args.n, len(data))
    # both classes, in index order (a class-folder set lists one class first)
    chosen = np.sort(np.concatenate([np.flatnonzero(data.labels == 0)[: n // 2], np.flatnonzero(data.labels == 1)[: n - n // 2]]))
    n = len(chosen)
    batch = data.load_arrays(det.input_size, method=det.spec.resize, indices=chosen)
    x = batch.x
    y = batch.y if det.positive == "fake" else 1 - batch.y
    paths = {
        "detector.scores only": lambda xb, yb: det.scores(xb),
        "handwritten tf.function FGSM": handwritten_fgsm(det, eps),
        "handwritten FGSM + scoring": handwritten_fgsm_scored(det, eps),
        "ART plain loss_gradient FGSM": art_plain_fgsm(det, eps, args.batch_size),
        "robustlab run_attack FGSM": robustlab_run_attack(det, eps),
    }
    for fn in paths.values():  # warm up: tracing, first-call costs
        time_path(fn, x[: 2 * args.batch_size], y[: 2 * args.batch_size], args.batch_size)
    # the command reads the same images from disk
    tmp = Path(tempfile.mkdtemp(prefix="bench-attacks-"))
    data_arg, split_arg = args.data, args.split
    if n < len(data):
        from PIL import Image

        sub = tmp / "data"
        for k, i in enumerate(chosen.tolist()):
            cls = "fake" if int(data.labels[i]) == 1 else "real"
            (sub / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[k]).save(sub / cls / f"{i:06d}.png")
        data_arg, split_arg = str(sub), None
    times: dict[str, list[float]] = {k: [] for k in paths}
    times["robustlab attack (attack stage)"] = []
    times["robustlab attack (whole command)"] = []
    stages: dict[str, list[float]] = {}
    try:
        cli_attack(args.detector, data_arg, split_arg, args.eps, args.batch_size, tmp / "warm")
        for r in range(args.rounds):
            for name, fn in paths.items():
                times[name].append(time_path(fn, x, y, args.batch_size))
            stage, wall, attacked, split = cli_attack(args.detector, data_arg, split_arg, args.eps, args.batch_size, tmp / f"run{r}")
            assert attacked == n, (attacked, n)
            split["evaluate's per-batch rest"] = stage - sum(split.values())
            for k, v in split.items():
                stages.setdefault(k, []).append(v)
            times["robustlab attack (attack stage)"].append(stage)
            times["robustlab attack (whole command)"].append(wall)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = n / statistics.median(times["handwritten tf.function FGSM"])
    base_scored = n / statistics.median(times["handwritten FGSM + scoring"])
    print(f"FGSM eps={args.eps}, {n} images {det.input_size[0]}x{det.input_size[1]}, batch size {args.batch_size}, detector {det.name}, {args.rounds} rounds (median)")
    print(f"{'path':36s} {'images/s':>9s} {'vs handwritten':>15s} {'vs handwritten+scoring':>23s}")
    for name, ts in times.items():
        if name == "detector.scores only":
            continue
        ips = n / statistics.median(ts)
        print(f"{name:36s} {ips:9.1f} {ips / base:14.2f}x {ips / base_scored:22.2f}x")
    per_image = lambda ts: 1000 * statistics.median(ts) / n  # noqa: E731
    print("\nms per image (median over rounds)")
    print(f"  handwritten tf.function FGSM (gradient + step + uint8)  {per_image(times['handwritten tf.function FGSM']):6.3f}")
    print(f"  detector.scores alone (the scoring in '+ scoring')       {per_image(times['detector.scores only']):6.3f}")
    print(f"  robustlab attack, attack stage                           {per_image(times['robustlab attack (attack stage)']):6.3f}")
    for k, ts in stages.items():
        print(f"    {k:52s} {per_image(ts):6.3f}")


if __name__ == "__main__":
    main()
