"""The built-in demo: a small real-vs-generated image set and detector, made on the spot, offline.

* **Real** images: random crops (random scale, flips) of the photographs that ship with
  scikit-learn (``china.jpg``, ``flower.jpg``) and matplotlib (``grace_hopper.jpg``), resized to
  the demo size with an antialiasing filter, as a camera pipeline would.
* **Generated** images: other crops of the same photographs passed through a generator-like
  process: downsampled to half size, then upsampled by a stride-2 *transposed convolution* whose
  kernel phases do not sum to the same gain (as learned upsampling layers do). That leaves the
  periodic checkerboard trace and the missing high frequencies that detectors of GAN/diffusion
  output key on. Content is drawn from the same photographs for both classes, so only the trace
  tells them apart.

A small CNN (a few Conv layers, input 64x64 RGB in [0, 1], sigmoid = P(fake)) is trained on the
``train`` split and saved as ``model.keras`` with a ``detector.yaml`` spec; then ``evaluate`` runs on
the ``test`` split.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from robustlab.errors import RobustlabError

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.progress import Progress

DEMO_MARKER = ".robustlab-demo"
DEMO_SIZE = 64
# stride-2 transposed-convolution taps per channel; phases sum to 0.97 / 1.05 (uneven overlap gain)
UPSAMPLE_TAPS = (
    (0.25, 0.80, 0.72, 0.25),
    (0.24, 0.81, 0.73, 0.24),
    (0.26, 0.79, 0.71, 0.26),
)


def demo_photos() -> list[np.ndarray]:
    """The real photographs shipped with scikit-learn and matplotlib, uint8 (H, W, 3) each."""
    import matplotlib
    from sklearn.datasets import load_sample_images

    from robustlab.data import decode_image

    photos = [np.asarray(im, dtype=np.uint8) for im in load_sample_images().images]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.exists():
        photos.append(decode_image(hopper))
    return photos


def _random_crop(photo: np.ndarray, rng: np.random.Generator, out: int) -> np.ndarray:
    """A random square crop (side out..min(H, W)), random horizontal flip, resized to ``out`` px."""
    from PIL import Image

    h, w = photo.shape[:2]
    side = int(rng.integers(out, min(h, w) + 1))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    crop = photo[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    im = Image.fromarray(np.ascontiguousarray(crop))
    return np.asarray(im.resize((out, out), Image.Resampling.LANCZOS), dtype=np.uint8)


def generator_upsample(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H, W, 3): half-size, then a stride-2 transposed convolution back.

    The per-channel taps give the two output phases slightly different gains: the periodic
    checkerboard of learned upsampling. A little noise stands in for the sampling process.
    """
    from PIL import Image

    h, w = image.shape[:2]
    small = np.asarray(Image.fromarray(image).resize((w // 2, h // 2), Image.Resampling.BOX), dtype=np.float64)
    h2, w2 = small.shape[:2]
    out = np.zeros((2 * h2 + 2, 2 * w2 + 2, 3), dtype=np.float64)
    for c, taps in enumerate(UPSAMPLE_TAPS):
        k = np.outer(taps, taps)
        for ky in range(4):
            for kx in range(4):
                out[ky : ky + 2 * h2 : 2, kx : kx + 2 * w2 : 2, c] += k[ky, kx] * small[..., c]
    out = out[1 : h + 1, 1 : w + 1]
    out += rng.normal(0.0, 1.5, out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def make_images(n_per_class: int, *, size: int = DEMO_SIZE, seed: int = 0, bar: "Progress | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """``(x uint8 (2n, size, size, 3), y int64 (2n,))`` with fake = 1, shuffled; ``bar`` counts images."""
    rng = np.random.default_rng([seed, 0xDE30])
    photos = demo_photos()
    xs, ys = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            photo = photos[int(rng.integers(len(photos)))]
            img = _random_crop(photo, rng, size)
            if label == 1:
                img = generator_upsample(img, rng)
            xs.append(img)
            ys.append(label)
            if bar is not None:
                bar.update(1)
    order = rng.permutation(len(xs))
    return np.stack(xs)[order], np.asarray(ys, np.int64)[order]


def write_split(root: Path, x: np.ndarray, y: np.ndarray, prefix: str) -> None:
    """PNG files under ``root/real`` and ``root/fake``."""
    from PIL import Image

    for name in ("real", "fake"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(x, y)):
        cls = "fake" if label == 1 else "real"
        Image.fromarray(img).save(root / cls / f"{prefix}_{i:05d}.png", optimize=False, compress_level=1)


def build_model(size: int = DEMO_SIZE) -> Any:
    """A small CNN: input RGB in [0, 1], output one sigmoid unit = P(fake)."""
    import keras
    from keras import layers

    inp = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(1, activation="sigmoid", name="p_fake")(x)
    return keras.Model(inp, out, name="demo_cnn")


def train_model(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int, verbose: int = 0, progress: bool = False) -> dict[str, list[float]]:
    """Fit ``model`` on ``x`` uint8 (N, S, S, 3) / 255 and ``y`` (N,); ``progress``: a bar over
    epochs x images on stderr, its stage the epoch and the last epoch's loss and accuracy."""
    import keras

    from robustlab.progress import progress as progress_bar

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    batch_size = 32
    with progress_bar(epochs * len(x), f"training the demo detector ({epochs} epochs x {len(x)} images)", progress) as bar:
        callbacks = [] if bar is None else [_progress_callback(bar, epochs, len(x), batch_size)]
        hist = model.fit(x.astype(np.float32) / 255.0, y.astype(np.float32), batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose, callbacks=callbacks)
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def _progress_callback(bar: "Progress", epochs: int, n: int, batch_size: int) -> Any:
    """A Keras callback moving ``bar`` by the images of each batch, its stage ``epoch 3/8, loss ...``."""
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.seen = 0
            bar.stage(f"epoch {epoch + 1}/{epochs}" + (getattr(self, "last", "")))

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            step = min(batch_size, n - self.seen)
            self.seen += step
            bar.update(step)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            if "loss" in logs and "accuracy" in logs:
                self.last = f"; last epoch loss {float(logs['loss']):.3f}, accuracy {float(logs['accuracy']):.3f}"

    return ProgressCallback()


DETECTOR_YAML = """\
# robustlab demo detector: a small CNN trained on the spot (see robustlab/demo.py)
name: demo-cnn
model: model.keras
input_size: [{size}, {size}]
resize: bilinear
color: rgb
scale: "0-1"
output: sigmoid
classes: [fake]
positive: fake
threshold: 0.5
"""


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RobustlabError("exists and is not a folder", thing=out, fix="choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_MARKER).exists() and not force:
        raise RobustlabError("exists and is not a robustlab demo folder", thing=out, fix="choose another --out, or pass --force to replace it")


def _make_demo_data(work: Path, seed: int, n_train: int, n_val: int, n_test: int, *, progress: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``work/data/{train,val,test}/{real,fake}/*.png``; returns the arrays of each split.
    ``progress``: a bar over the images made, its stage the split."""
    from robustlab.progress import progress as progress_bar

    arrays = {}
    splits = {"train": (n_train, 1), "val": (n_val, 2), "test": (n_test, 3)}
    with progress_bar(sum(2 * n for n, _ in splits.values()), "making the demo images", progress) as bar:
        for name, (n, sub) in splits.items():
            if bar is not None:
                bar.stage(f"{name} split")
            x, y = make_images(n, seed=seed * 10 + sub, bar=bar)
            write_split(work / "data" / name, x, y, name)
            arrays[name] = (x, y)
    return arrays


def _train_demo_detector(work: Path, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int, progress: bool = False) -> dict[str, list[float]]:
    """Train the demo CNN on ``x`` uint8 (N, S, S, 3), ``y`` (N,); save ``work/detector/`` (model + spec)."""
    import keras

    keras.utils.set_random_seed(seed)  # weight initialisation too, not only the training order
    model = build_model(DEMO_SIZE)
    history = train_model(model, x, y, epochs=epochs, seed=seed, progress=progress)
    det_dir = work / "detector"
    det_dir.mkdir()
    model.save(det_dir / "model.keras")
    (det_dir / "detector.yaml").write_text(DETECTOR_YAML.format(size=DEMO_SIZE), encoding="utf-8")
    return history


def _swap_into_place(work: Path, out: Path) -> None:
    """Move the finished ``work`` folder to ``out``; a previous demo there is removed after the swap."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{int(time.time())}"
        os.replace(out, old)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_demo(
    out: "str | os.PathLike" = "reports/demo",
    *,
    seed: int = 0,
    n_train: int = 1000,
    n_val: int = 300,
    n_test: int = 300,
    epochs: int = 8,
    batch_size: int = 32,
    force: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Build the demo data set and detector under ``out`` and evaluate it into ``out/run``.

    ``out`` is rebuilt whole (in a temporary sibling, then swapped in); an existing folder that is
    not a previous demo is refused unless ``force``. Returns a summary dict (paths, timings, rows).
    """
    from robustlab._tf import import_tf
    from robustlab.data import open_dataset
    from robustlab.detector.loading import load_detector
    from robustlab.evaluation.pipeline import plan_evaluation, run

    t0 = time.time()
    out = Path(out).resolve()
    _prepare_out(out, force)
    import_tf()
    _prepare_out(out, force)  # again: the folder may have appeared while TensorFlow was imported
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    timings: dict[str, float] = {}
    try:
        (work / DEMO_MARKER).write_text("made by robustlab demo; safe to delete\n")
        t = time.time()
        log(f"robustlab demo: making {2 * (n_train + n_val + n_test)} real/generated images ({DEMO_SIZE}x{DEMO_SIZE})")
        arrays = _make_demo_data(work, seed, n_train, n_val, n_test, progress=progress)
        timings["make_data_seconds"] = round(time.time() - t, 2)
        t = time.time()
        log(f"robustlab demo: training a small CNN detector ({epochs} epochs on {2 * n_train} images)")
        history = _train_demo_detector(work, *arrays["train"], epochs=epochs, seed=seed, progress=progress)
        timings["train_seconds"] = round(time.time() - t, 2)
        _swap_into_place(work, out)  # then evaluate there, so the paths in run.json stay valid
        work = out
        t = time.time()
        log("robustlab demo: evaluating on the test split")
        det = load_detector(out / "detector" / "detector.yaml")
        data = open_dataset(out / "data", split="test")
        variants = demo_variants()
        plan = plan_evaluation(det, data, out=out / "run", attacks=variants, attack_fraction=1.0, seed=seed, batch_size=batch_size, progress=progress, command=command)
        plan = replace(plan, config={"demo": True, "epochs": epochs, "n_train": n_train, "n_test": n_test}, demo={"train_history": history})
        result = run(plan).result
        timings["evaluate_seconds"] = round(time.time() - t, 2)
    except BaseException:
        if work != out:
            shutil.rmtree(work, ignore_errors=True)
        raise
    timings["total_seconds"] = round(time.time() - t0, 2)
    return {
        "out": out,
        "data": out / "data",
        "detector": out / "detector" / "detector.yaml",
        "run": out / "run",
        "rows": result.rows,
        "timings": timings,
        "train_accuracy": history.get("accuracy", [None])[-1],
    }


def demo_variants() -> list[Any]:
    """The attacks and corruptions the demo runs (grows as capabilities land)."""
    from robustlab.attacks.variant import parse_attacks
    from robustlab.corruptions.variant import parse_corruptions

    variants: list[Any] = []
    variants.extend(parse_attacks(["fgsm:eps=1/255,4/255,8/255", "pgd:eps=8/255,steps=10"]))
    variants.extend(parse_corruptions(["jpeg:1-5", "blur:1-5", "resize:1-5"]))
    return variants
