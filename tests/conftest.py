"""Shared fixtures: tiny real Keras detectors and real image files (no mocks).

* ``make_images(n_per_class, size, seed)`` -> (x uint8, y): real = smooth random textures,
  fake = the same kind of texture plus a periodic checkerboard (a generator trace), so a tiny CNN
  learns it in a few epochs.
* ``image_folder`` / ``write_class_folder``: a real/ fake/ tree of PNG files.
* ``trained_detector`` (session): a small CNN trained on those images, saved as ``.keras`` with a
  detector spec (32x32 RGB, scale 0-1, sigmoid = P(fake)); accuracy well above chance.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

SIZE = 32


def make_images(n_per_class: int, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x uint8 (2n, size, size, 3), y int64 (2n,) with fake = 1 (checkerboard trace), shuffled."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    yy, xx = np.mgrid[0:size, 0:size]
    checker = ((yy + xx) % 2 * 2 - 1).astype(np.float64)
    for label in (0, 1):
        for _ in range(n_per_class):
            base = rng.uniform(40, 215, size=(1, 1, 3))
            low = rng.normal(0, 25, size=(size // 8 + 1, size // 8 + 1, 3))
            up = np.kron(low, np.ones((8, 8, 1)))[:size, :size]
            img = base + up + rng.normal(0, 4, (size, size, 3))
            if label == 1:
                img = img + 14.0 * checker[..., None]
            xs.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
            ys.append(label)
    order = rng.permutation(len(xs))
    return np.stack(xs)[order], np.asarray(ys, np.int64)[order]


def write_class_folder(root: Path, x: np.ndarray, y: np.ndarray, names: tuple[str, str] = ("real", "fake"), fmt: str = "png") -> Path:
    from PIL import Image

    for n in names:
        (root / n).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(x, y)):
        Image.fromarray(img).save(root / names[int(label)] / f"img_{i:04d}.{fmt}")
    return root


def tiny_cnn(size: int = SIZE, *, units: int = 1, activation: str = "sigmoid"):
    import keras
    from keras import layers

    inp = keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(units, activation=activation)(x)
    return keras.Model(inp, out)


def run(*args: str):
    """``robustlab ARGS...`` through Click's CliRunner (stdout and stderr mixed in ``.output``)."""
    from click.testing import CliRunner

    from robustlab.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_one_line_error(result, *needles: str) -> None:
    """Exit code 2, exactly one ``robustlab: error`` line containing ``needles``, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("robustlab: error")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="session", autouse=True)
def _tensorflow_logging_bound_to_the_real_stderr() -> None:
    """Import TensorFlow (and absl, ART's logging guard) once, outside any CliRunner.

    TensorFlow's and absl's log handlers bind to whatever ``sys.stderr`` is when they are created;
    created inside a CliRunner invocation they would write to its closed stream later.
    """
    from robustlab._tf import import_tf

    tf = import_tf()
    tf.get_logger()
    import absl.logging  # noqa: F401


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    x, y = make_images(12, seed=1)
    return write_class_folder(tmp_path / "data", x, y)


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a detector.yaml for a small CNN trained on checkerboard fakes (32x32, 0-1, P(fake))."""
    import keras

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("trained")
    x, y = make_images(200, seed=0)
    model = tiny_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(x.astype("float32") / 255.0, y.astype("float32"), epochs=10, batch_size=32, verbose=0)
    model.save(root / "model.keras")
    (root / "detector.yaml").write_text(
        "name: tiny-cnn\nmodel: model.keras\nscale: '0-1'\ncolor: rgb\noutput: sigmoid\nclasses: [fake]\nthreshold: 0.5\n",
        encoding="utf-8",
    )
    return root / "detector.yaml"


@pytest.fixture(scope="session")
def test_images_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A held-out real/ fake/ PNG folder for ``trained_detector`` (40 + 40 images)."""
    x, y = make_images(40, seed=7)
    return write_class_folder(tmp_path_factory.mktemp("testset") / "data", x, y)
