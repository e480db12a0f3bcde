"""``robustlab adv-train`` through Click's CliRunner (and one real kill + --resume in a subprocess)."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_images, tiny_cnn, write_class_folder

from robustlab.cli import main

ROBUSTLAB = str(Path(sys.executable).parent / "robustlab")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train/ val/ folders (32x32 PNG) and a briefly trained tiny CNN detector spec."""
    import keras
    import tensorflow as tf

    tf.get_logger()  # TF's log handler binds to sys.stderr when first made: not to a CliRunner stream

    root = tmp_path_factory.mktemp("cli_ft")
    x, y = make_images(24, seed=31)
    write_class_folder(root / "train", x, y)
    xv, yv = make_images(10, seed=32)
    write_class_folder(root / "val", xv, yv)
    write_class_folder(root / "onlyfake", x[y == 1][:6], y[y == 1][:6])
    keras.utils.set_random_seed(0)
    model = tiny_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(x.astype("float32") / 255.0, y.astype("float32"), epochs=8, batch_size=16, verbose=0)
    model.save(root / "model.keras")
    spec = root / "detector.yaml"
    spec.write_text("name: tiny\nmodel: model.keras\nscale: '0-1'\noutput: sigmoid\nclasses: [fake]\n", encoding="utf-8")
    return {"root": root, "spec": spec, "train": root / "train", "val": root / "val", "onlyfake": root / "onlyfake", "model": root / "model.keras"}


FAST = ["--epochs", "1", "--batch-size", "16", "--guard-size", "8", "--pgd-steps", "2", "--eval-attack", "fgsm:eps=8/255", "--eval-corruption", "jpeg:2", "--eval-fraction", "0.5", "--quiet"]


def run(args: list[str]):
    return CliRunner().invoke(main, ["adv-train", *args], catch_exceptions=False)


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("robustlab: error: ")
    for w in words:
        assert w in lines[0], lines[0]


def test_help_has_examples():
    result = run(["--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "--resume" in result.output and "--ratio" in result.output


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--ratio", "1.5"], ["--ratio 1.5 is outside [0, 1]"]),
        (["--ratio", "-0.2"], ["--ratio -0.2 is outside [0, 1]"]),
        (["--eps", "0"], ["--eps 0 is outside (0, 1]"]),
        (["--eps", "8/0"], ["--eps"]),
        (["--trainable", "middle"], ["--trainable 'middle'"]),
        (["--attack", "deepfool"], ["training attack 'deepfool'"]),
    ],
    ids=["ratio-high", "ratio-negative", "eps-zero", "eps-fraction", "trainable", "attack"],
)
def test_bad_options_exit_2_one_line(setup, tmp_path, extra, words):
    result = run([str(setup["spec"]), str(setup["train"]), "--val", str(setup["val"]), "--out", str(tmp_path / "new"), *extra])
    one_line_error(result, *words)
    assert not (tmp_path / "new").exists()


def test_bad_input_exit_2_one_line(setup, tmp_path):
    out = str(tmp_path / "new")
    one_line_error(run([str(setup["spec"]), str(setup["train"]), "--out", out]), "no validation set", "--val")
    one_line_error(run([str(setup["spec"]), str(setup["train"]), "--val", str(tmp_path / "nope"), "--out", out]), "no such file")
    one_line_error(run([str(setup["spec"]), str(setup["onlyfake"]), "--val", str(setup["val"]), "--out", out]), "only one class")
    one_line_error(run([str(setup["spec"]), str(setup["train"]), "--val", str(setup["val"])]), "no --out")
    one_line_error(run(["--resume", str(tmp_path / "never")]), "no interrupted adv-train")


def test_savedmodel_exit_2_says_why(setup, tmp_path):
    import keras

    keras.saving.load_model(setup["model"]).export(tmp_path / "sm", verbose=False)
    result = run([str(tmp_path / "sm"), str(setup["train"]), "--val", str(setup["val"]), "--scale", "0-1", "--output", "sigmoid", "--out", str(tmp_path / "new")])
    one_line_error(result, "cannot be trained", "inference only")


def test_adv_train_end_to_end(setup, tmp_path):
    before = hashlib.sha256(setup["model"].read_bytes()).hexdigest()
    out = tmp_path / "new"
    args = [str(setup["spec"]), str(setup["train"]), "--val", str(setup["val"]), "--eps", "8/255", "--ratio", "0.3", "--out", str(out), *FAST]
    result = run(args)
    assert result.exit_code == 0, result.output
    assert "Accuracy before" in result.output and "Original Images" in result.output
    for name in ("model.keras", "detector.yaml", "history.csv", "history.png", "train.json", "before-after/comparison.md"):
        assert (out / name).exists(), name
    assert hashlib.sha256(setup["model"].read_bytes()).hexdigest() == before
    # the new detector works with the other commands
    ev = CliRunner().invoke(main, ["evaluate", str(out / "detector.yaml"), str(setup["val"]), "--out", str(tmp_path / "run"), "--quiet"])
    assert ev.exit_code == 0, ev.output
    # an existing NEW is refused without --force, and left as it was
    stamp = (out / "model.keras").stat().st_mtime_ns
    one_line_error(run(args), "already exists", "--force")
    assert (out / "model.keras").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_kill_and_resume_matches_an_uninterrupted_run(setup, tmp_path):
    """A real SIGKILL after the first checkpoint, then --resume: the same weights as one run."""
    import keras

    common = [str(setup["spec"]), str(setup["train"]), "--val", str(setup["val"]), "--ratio", "0.5", "--attack", "fgsm-rs", "--seed", "3", *FAST]
    common[common.index("--epochs") + 1] = "3"
    ref = run([*common, "--out", str(tmp_path / "ref")])
    assert ref.exit_code == 0, ref.output

    out = tmp_path / "killed"
    partial = tmp_path / ".killed.adv-train-partial"
    env = {**os.environ, "ROBUSTLAB_QUIET": "1"}
    proc = subprocess.Popen([ROBUSTLAB, "adv-train", *common, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = partial / "checkpoints" / "LATEST"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if latest.exists() and latest.read_text().strip() >= "epoch-0001":
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists() and latest.exists()

    result = run(["--resume", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert not partial.exists()
    a = keras.saving.load_model(tmp_path / "ref" / "model.keras")
    b = keras.saving.load_model(out / "model.keras")
    for va, vb in zip(a.weights, b.weights):
        assert np.array_equal(np.asarray(va), np.asarray(vb)), va.path
    strip = lambda text: [",".join(line.split(",")[:-2]) for line in text.splitlines()]  # noqa: E731 - drop the timing columns
    assert strip((out / "history.csv").read_text()) == strip((tmp_path / "ref" / "history.csv").read_text())
