"""Foundation benchmarks (run by hand; not collected by pytest).

    python tests/benchmarks/bench_foundation.py throughput [--n 2000] [--size 128] [--batch-size 32]
    python tests/benchmarks/bench_foundation.py memory [--small 1000] [--large 20000]

throughput: clean evaluation from image files on disk (robustlab.evaluation.engine, decode + resize + score,
            out=None) vs ``model.predict`` on the same images already decoded and preprocessed in
            memory, same model and batch size, in one process.
memory:     peak RSS of a whole ``robustlab evaluate`` run (a subprocess each) on N and M images.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np

HERE = Path(__file__).resolve().parent


def write_images(root: Path, n: int, size: int, seed: int = 0) -> None:
    """n JPEG photos-like files (real/fake halves) of size x size, a little larger than the model input."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in ("real", "fake"):
        (root / cls).mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for i in range(n):
        cls = "fake" if i % 2 else "real"
        img = np.roll(base, i % 64, axis=0) ^ np.uint8(i % 251)
        im = Image.fromarray(img).resize((size + 16, size + 16), Image.Resampling.BILINEAR)
        im.save(root / cls / f"{i:06d}.jpg", quality=90)


def build_model(size: int, kind: str):
    import keras
    from keras import layers

    if kind == "efficientnet":
        base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
        out = layers.Dense(1, activation="sigmoid")(base.output)
        return keras.Model(base.input, out)
    inp = keras.Input((size, size, 3))
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(1, activation="sigmoid")(x))


def throughput(args: argparse.Namespace) -> None:
    from robustlab.data import open_dataset
    from robustlab.detector.loading import load_detector
    from robustlab.evaluation.pipeline import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_images(tmp / "data", args.n, args.size)
        model = build_model(args.size, args.model)
        model.save(tmp / "m.keras")
        det = load_detector(tmp / "m.keras", scale="0-255")
        data = open_dataset(tmp / "data")
        # in-memory reference: decoded + resized + preprocessed arrays, model.predict
        x_u8 = data.load_arrays(det.input_size).x
        x = x_u8.astype(np.float32)  # 0-255 is this model's scale
        model.predict(x[: args.batch_size], batch_size=args.batch_size, verbose=0)  # warm-up
        evaluate(det, data.subset(range(args.batch_size)), out=None, batch_size=args.batch_size)  # warm-up
        results = {}
        for rep in range(args.repeats):
            t = time.perf_counter()
            model.predict(x, batch_size=args.batch_size, verbose=0)
            results.setdefault("predict", []).append(time.perf_counter() - t)
            t = time.perf_counter()
            evaluate(det, data, out=None, batch_size=args.batch_size)
            results.setdefault("robustlab", []).append(time.perf_counter() - t)
            t = time.perf_counter()
            for s in range(0, len(x_u8), args.batch_size):
                det.scores(x_u8[s : s + args.batch_size])
            results.setdefault("scores_memory", []).append(time.perf_counter() - t)
        best = {k: min(v) for k, v in results.items()}
        print(f"model={args.model} n={args.n} size={args.size} batch={args.batch_size} repeats={args.repeats}")
        print(f"model.predict in memory : {args.n / best['predict']:.1f} images/s ({best['predict']:.2f} s)")
        print(f"robustlab from disk     : {args.n / best['robustlab']:.1f} images/s ({best['robustlab']:.2f} s)")
        print(f"Detector.scores, memory : {args.n / best['scores_memory']:.1f} images/s ({best['scores_memory']:.2f} s)")
        print(f"ratio robustlab-from-disk / model.predict-in-memory : {best['predict'] / best['robustlab']:.3f}x")
        print(f"ratio robustlab-from-disk / same scoring in memory  : {best['scores_memory'] / best['robustlab']:.3f}x")


def memory_child(args: argparse.Namespace) -> None:
    from robustlab.data import open_dataset
    from robustlab.detector.loading import load_detector
    from robustlab.evaluation.pipeline import evaluate

    det = load_detector(args.model_path, scale="0-255")
    data = open_dataset(args.data)
    t = time.perf_counter()
    evaluate(det, data, out=args.out, batch_size=args.batch_size)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{len(data)} {peak_kb / 1024:.1f} {time.perf_counter() - t:.1f}")


def memory(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_model(64, "cnn").save(tmp / "m.keras")
        out = {}
        for n in (args.small, args.large):
            write_images(tmp / f"d{n}", n, 64)
            proc = subprocess.run(
                [sys.executable, __file__, "_memory_child", "--model-path", str(tmp / "m.keras"), "--data", str(tmp / f"d{n}"), "--out", str(tmp / f"run{n}"), "--batch-size", str(args.batch_size)],
                check=True,
                capture_output=True,
                text=True,
            )
            count, peak, secs = proc.stdout.strip().splitlines()[-1].split()
            out[n] = float(peak)
            print(f"{count} images: peak RSS {peak} MB, evaluate {secs} s")
        print(f"difference: {out[args.large] - out[args.small]:.1f} MB")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--n", type=int, default=2000)
    t.add_argument("--size", type=int, default=128)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--repeats", type=int, default=2)
    t.add_argument("--model", choices=["efficientnet", "cnn"], default="efficientnet")
    m = sub.add_parser("memory")
    m.add_argument("--small", type=int, default=1000)
    m.add_argument("--large", type=int, default=20000)
    m.add_argument("--batch-size", type=int, default=32)
    c = sub.add_parser("_memory_child")
    c.add_argument("--model-path")
    c.add_argument("--data")
    c.add_argument("--out")
    c.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    {"throughput": throughput, "memory": memory, "_memory_child": memory_child}[args.cmd](args)


if __name__ == "__main__":
    main()
