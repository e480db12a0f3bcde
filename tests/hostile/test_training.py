"""Hostile input for ``robustlab adv-train`` (issue 12): a checkpoint whose run.json is truncated,
lacks keys, has wrong types or says ``trust_model: true`` beside a Lambda-layer model; flags that
are NaN or infinite; a learning rate that makes the loss NaN; an --out that is the validation set.
Every file is written by the test; each case checks exit code 2, the one-line message, and that no
input (model, spec, TRAIN, VAL) changed."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import (
    assert_one_line_error,
    make_images,
    run,
    tiny_cnn,
    write_class_folder,
)

FAST = ["--epochs", "1", "--batch-size", "16", "--guard-size", "8", "--pgd-steps", "2", "--eval-attack", "fgsm:eps=8/255", "--eval-corruption", "jpeg:2", "--quiet"]


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (files or folders), by path."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train/ and val/ PNG folders, a tiny detector, and a checkpoint of a run stopped after epoch 1."""
    import keras

    from robustlab.detector.loading import load_detector
    from robustlab.training.config import FinetuneConfig
    from robustlab.training.folder import partial_dir
    from robustlab.training.run import adv_train

    root = tmp_path_factory.mktemp("hostile_ft")
    x, y = make_images(12, seed=41)
    write_class_folder(root / "train", x, y)
    xv, yv = make_images(6, seed=42)
    write_class_folder(root / "val", xv, yv)
    keras.utils.set_random_seed(0)
    model = tiny_cnn()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x.astype("float32") / 255.0, y.astype("float32"), epochs=2, verbose=0)
    model.save(root / "model.keras")
    spec = root / "detector.yaml"
    spec.write_text("name: tiny\nmodel: model.keras\nscale: '0-1'\noutput: sigmoid\nclasses: [fake]\n", encoding="utf-8")

    def stop(row: dict) -> None:
        raise KeyboardInterrupt

    out = root / "stopped"
    config = FinetuneConfig(epochs=2, batch_size=16, guard_size=8, pgd_steps=2, patience=0, reduce_lr_patience=0)
    with pytest.raises(KeyboardInterrupt):
        adv_train(load_detector(spec), root / "train", root / "val", out=out, config=config, on_epoch_end=stop, eval_attacks=[], eval_corruptions=[])
    return {"root": root, "spec": spec, "model": root / "model.keras", "train": root / "train", "val": root / "val", "checkpoint": partial_dir(out)}


def inputs_of(setup: dict[str, Path]) -> dict[str, str]:
    return snapshot(setup["model"], setup["spec"], setup["train"], setup["val"])


def copy_checkpoint(setup: dict[str, Path], tmp_path: Path) -> tuple[Path, Path, dict]:
    """The stopped run's checkpoint, moved to ``tmp_path/new`` -> (out, its partial folder, run.json)."""
    from robustlab.training.folder import partial_dir

    out = tmp_path / "new"
    partial = partial_dir(out)
    shutil.copytree(setup["checkpoint"], partial)
    (partial / "LOCK").unlink(missing_ok=True)
    record = json.loads((partial / "run.json").read_text(encoding="utf-8"))
    record["out"] = str(out.resolve())
    (partial / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return out, partial, record


def test_the_checkpoint_resumes_when_untouched(setup, tmp_path):
    """The reference for the cases below: the same copied checkpoint resumes and finishes."""
    out, _, _ = copy_checkpoint(setup, tmp_path)
    result = run("adv-train", "--resume", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert (out / "model.keras").is_file() and json.loads((out / "run.json").read_text())["complete"]


def _truncated(record: dict) -> str:
    return json.dumps(record)[:200]


def _without(*keys: str):
    def edit(record: dict) -> str:
        for k in keys:
            record.pop(k)
        return json.dumps(record)

    return edit


def _with(path: tuple[str, ...], value):
    def edit(record: dict) -> str:
        d = record
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        return json.dumps(record)

    return edit


@pytest.mark.parametrize(
    "edit, words",
    [
        (_truncated, ["run.json", "not JSON, or truncated", "--force"]),
        (lambda r: "\x00\x01 not json", ["run.json", "not JSON"]),
        (lambda r: json.dumps([1, 2]), ["run.json", "a JSON list"]),
        (_without("fingerprints", "config"), ["run.json", "lacks config, fingerprints"]),
        (_with(("config", "epochs"), "2"), ["run.json", "config: --epochs '2' is not a whole number"]),
        (_with(("config", "min_lr"), None), ["run.json", "--min-lr None is not a finite number"]),
        (_with(("fingerprints",), ["a", "b"]), ["run.json", "fingerprints is list, not dict"]),
        (_with(("train",), 7), ["run.json", "train is int, not str"]),
        (_with(("eval", "attacks"), [{"method": "fgsm"}]), ["run.json", "eval.attacks"]),
        (_with(("detector_spec", "resize"), "sideways"), ["run.json", "detector_spec"]),
        (_with(("out",), "/somewhere/else"), ["run.json", "made for --out /somewhere/else"]),
        (_with(("format",), 1), ["run.json", "another robustlab version"]),
    ],
    ids=["truncated", "not-json", "json-list", "missing-keys", "epochs-string", "min-lr-null", "fingerprints-list", "train-int", "eval-attack-object", "spec-model-list", "other-out", "old-format"],
)
def test_a_broken_checkpoint_is_refused_before_anything_loads(setup, tmp_path, edit, words):
    out, partial, record = copy_checkpoint(setup, tmp_path)
    (partial / "run.json").write_text(edit(record), encoding="utf-8")
    before = inputs_of(setup)
    result = run("adv-train", "--resume", str(out), "--quiet")
    assert_one_line_error(result, *words)
    assert inputs_of(setup) == before and not out.exists()


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda p: (p / "checkpoints" / "LATEST").write_text("../../../etc\n"), ["LATEST", "not an epoch-NNNN folder"]),
        (lambda p: (p / "checkpoints" / "epoch-0001" / "state.json").write_text('{"epoch": 1, "lr": '), ["state.json", "unreadable checkpoint state"]),
        (lambda p: (p / "checkpoints" / "epoch-0001" / "state.json").write_text('{"epoch": "1"}'), ["state.json", "not a valid checkpoint state"]),
        (lambda p: (p / "checkpoints" / "epoch-0001" / "model.npz").write_bytes(b"PK\x03\x04 truncated"), ["model.npz", "unreadable checkpoint arrays"]),
    ],
    ids=["latest-elsewhere", "state-truncated", "state-types", "weights-truncated"],
)
def test_broken_checkpoint_files_are_refused(setup, tmp_path, damage, words):
    out, partial, _ = copy_checkpoint(setup, tmp_path)
    damage(partial)
    before = inputs_of(setup)
    result = run("adv-train", "--resume", str(out), "--quiet")
    assert_one_line_error(result, *words)
    assert inputs_of(setup) == before and not out.exists()


def test_trust_in_the_checkpoint_does_not_run_a_lambda_layer(setup, tmp_path):
    """run.json says trust_model: true and names a model with a Lambda layer that writes a file when
    it runs: resuming without --trust-model refuses to load it (the file never appears)."""
    import keras

    from robustlab.data import open_dataset
    from robustlab.training.checkpoints import file_sha256

    marker = tmp_path / "lambda-ran"
    inp = keras.Input((32, 32, 3))
    touch = eval(f"lambda t: t + 0.0 * float(__import__('pathlib').Path({str(marker)!r}).touch() or 0)")  # no closure: a constant path
    x = keras.layers.Lambda(touch)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out_layer = keras.layers.Dense(1, activation="sigmoid")(x)
    evil = tmp_path / "evil" / "model.keras"
    evil.parent.mkdir()
    keras.Model(inp, out_layer).save(evil)
    marker.unlink(missing_ok=True)  # building the model ran the lambda once, here in the test

    out, partial, record = copy_checkpoint(setup, tmp_path)
    record["trust_model"] = True
    record["detector_spec"]["model"] = str(evil)
    record["detector_source"] = None
    record["fingerprints"]["model"] = file_sha256(evil)
    record["fingerprints"]["train"] = open_dataset(record["train"]).fingerprint()
    (partial / "run.json").write_text(json.dumps(record), encoding="utf-8")
    before = {**inputs_of(setup), **snapshot(evil)}
    result = run("adv-train", "--resume", str(out), "--quiet")
    assert_one_line_error(result, "--trust-model")
    assert not marker.exists(), "the Lambda layer ran"
    assert {**inputs_of(setup), **snapshot(evil)} == before and not out.exists()


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--min-lr", "nan", ["--min-lr nan is not a finite number"]),
        ("--lr", "inf", ["--lr inf is not a finite number"]),
        ("--lr", "-inf", ["--lr -inf is not a finite number"]),
        ("--label-smoothing", "nan", ["--label-smoothing nan"]),
        ("--reduce-lr-factor", "inf", ["--reduce-lr-factor inf"]),
        ("--guard-drop", "nan", ["--guard-drop nan"]),
        ("--eps", "nan", ["--eps"]),
        ("--pgd-step", "inf", ["--pgd-step"]),
        ("--ratio", "nan", ["--ratio"]),
        ("--eval-fraction", "nan", ["--eval-fraction"]),
        ("--epochs", "1e9999", ["--epochs"]),
    ],
)
def test_non_finite_numbers_are_refused(setup, tmp_path, flag, value, words):
    before = inputs_of(setup)
    out = tmp_path / "new"
    result = run("adv-train", str(setup["spec"]), str(setup["train"]), "--val", str(setup["val"]), "--out", str(out), *FAST, flag, value)
    assert_one_line_error(result, *words)
    assert inputs_of(setup) == before and list(tmp_path.iterdir()) == []


def test_a_loss_that_becomes_nan_stops_with_exit_2(setup, tmp_path):
    before = inputs_of(setup)
    out = tmp_path / "new"
    result = run("adv-train", str(setup["spec"]), str(setup["train"]), "--val", str(setup["val"]), "--out", str(out), *FAST, "--optimizer", "sgd", "--lr", "1e30", "--ratio", "0")
    assert_one_line_error(result, "training diverged", "nan", "--lr")
    assert inputs_of(setup) == before and list(tmp_path.iterdir()) == []


def test_out_that_is_the_validation_set_is_refused_even_with_force(setup, tmp_path):
    val = tmp_path / "val"
    shutil.copytree(setup["val"], val)
    before = {**inputs_of(setup), **snapshot(val)}
    result = run("adv-train", str(setup["spec"]), str(setup["train"]), "--val", str(val), "--out", str(val), "--force", *FAST)
    assert_one_line_error(result, "--out is an input")
    assert {**inputs_of(setup), **snapshot(val)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val"]


@pytest.mark.slow
def test_out_inside_the_validation_set_is_refused(setup, tmp_path):
    val = tmp_path / "val"
    shutil.copytree(setup["val"], val)
    before = snapshot(val)
    result = run("adv-train", str(setup["spec"]), str(setup["train"]), "--val", str(val), "--out", str(val / "new"), *FAST)
    assert_one_line_error(result, "--out")
    assert snapshot(val) == before and sorted(os.listdir(val)) == sorted(os.listdir(setup["val"]))
