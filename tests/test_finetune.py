"""Adversarial fine-tuning (robustlab.training.run): attacks against the current weights, the schedule,
the guard, outputs, checkpoints and resume. Tiny real Keras models and real PNG folders."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, write_class_folder

from robustlab.errors import RobustlabError

SIZE = 32
EPS = 8 / 255


def bn_dropout_cnn(size: int = SIZE):
    """A tiny CNN with BatchNormalization and Dropout (state that a resume must restore)."""
    import keras
    from keras import layers

    inp = keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = layers.BatchNormalization(momentum=0.8)(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    out = layers.Dense(1, activation="sigmoid", name="head")(x)
    return keras.Model(inp, out)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ft(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train/ (40+40), val/ (16+16) PNG folders and a trained BN+Dropout detector (spec + .keras)."""
    import keras

    root = tmp_path_factory.mktemp("ft")
    x, y = make_images(40, seed=21)
    write_class_folder(root / "train", x, y)
    xv, yv = make_images(16, seed=22)
    write_class_folder(root / "val", xv, yv)
    keras.utils.set_random_seed(0)
    model = bn_dropout_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(x.astype("float32") / 255.0, y.astype("float32"), epochs=12, batch_size=16, verbose=0)
    (root / "det").mkdir()
    model.save(root / "det" / "model.keras")
    spec = root / "det" / "detector.yaml"
    spec.write_text("name: tiny-bn\nmodel: model.keras\nscale: '0-1'\ncolor: rgb\noutput: sigmoid\nclasses: [fake]\nthreshold: 0.5\n", encoding="utf-8")
    return {"root": root, "train": root / "train", "val": root / "val", "spec": spec, "model": root / "det" / "model.keras", "x": xv, "y": yv}


def small_config(**changes):
    from robustlab.training.config import FinetuneConfig

    base = dict(epochs=2, ratio=0.5, lr=2e-3, batch_size=16, guard_size=16, pgd_steps=3, patience=0, reduce_lr_patience=0)
    base.update(changes)
    return FinetuneConfig(**base)


EVAL = dict(eval_attacks=["fgsm:eps=8/255"], eval_corruptions=["jpeg:3"], eval_fraction=0.5)


@pytest.fixture(scope="module")
def finished(ft: dict[str, Path]) -> dict:
    """One uninterrupted 2-epoch run (the reference for the resume test)."""
    from robustlab.detector.loading import load_detector
    from robustlab.training.run import adv_train

    before = sha(ft["model"])
    det = load_detector(ft["spec"])
    rows: list[dict] = []
    result = adv_train(det, ft["train"], ft["val"], out=ft["root"] / "new", config=small_config(), on_epoch_end=rows.append, **EVAL)
    return {"result": result, "model_sha_before": before, "rows": rows}


# --------------------------------------------------------------------------- parsing and config


@pytest.mark.parametrize(
    "changes, word",
    [
        ({"ratio": 1.5}, "--ratio"),
        ({"ratio": -0.1}, "--ratio"),
        ({"eps": 0.0}, "--eps"),
        ({"trainable": "last:0"}, "--trainable"),
        ({"class_weight": "fake=-1"}, "--class-weight"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"attack": "cw"}, "training attack"),
        ({"label_smoothing": 1.0}, "--label-smoothing"),
        ({"epochs": 0}, "--epochs"),
        ({"min_lr": float("nan")}, "--min-lr nan is not a finite number"),
        ({"lr": float("inf")}, "--lr inf is not a finite number"),
        ({"guard_drop": float("nan")}, "--guard-drop"),
        ({"reduce_lr_factor": float("-inf")}, "--reduce-lr-factor"),
        ({"min_lr": -1e-6}, "--min-lr"),
        ({"epochs": 2.5}, "--epochs 2.5 is not a whole number"),
        ({"epochs": True}, "--epochs"),
        ({"guard": "yes"}, "guard"),
        ({"optimizer": 3}, "--optimizer"),
    ],
    ids=[
        "ratio-high", "ratio-negative", "eps-zero", "trainable", "class-weight", "optimizer", "attack", "smoothing", "epochs",
        "min-lr-nan", "lr-inf", "guard-drop-nan", "factor-minus-inf", "min-lr-negative", "epochs-float", "epochs-bool", "guard-string", "optimizer-number",
    ],
)
def test_bad_config_is_one_line_error(changes, word):
    with pytest.raises(RobustlabError) as info:
        small_config(**changes).validated()
    text = info.value.one_line()
    assert word in text and "\n" not in text


def test_ratio_bounds_are_inclusive():
    assert small_config(ratio=0.0).validated().ratio == 0.0
    assert small_config(ratio=1.0).validated().ratio == 1.0


def test_parse_trainable_and_class_weights():
    from robustlab.training.config import (
        class_weights,
        parse_class_weight,
        parse_trainable,
    )

    assert parse_trainable("all") == ("all", 0)
    assert parse_trainable("head") == ("last", 1)
    assert parse_trainable("LAST:3") == ("last", 3)
    assert parse_class_weight("auto") == "balanced"
    assert parse_class_weight("fake=3") == {"real": 1.0, "fake": 3.0}
    labels = np.asarray([1, 1, 1, 0])  # 3 fake, 1 real
    w = class_weights("balanced", labels, "fake")  # [negative=real, positive=fake]
    assert w.dtype == np.float32 and w[0] == pytest.approx(2.0) and w[1] == pytest.approx(4 / 6)
    w_real = class_weights("real=2,fake=1", labels, "real")  # positive: real -> [fake, real]
    assert w_real.tolist() == [1.0, 2.0]
    assert class_weights("none", labels, "fake").tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------- pure schedule / guard logic


def test_schedule_step_early_stopping_and_reduce_on_plateau():
    from robustlab.training.checkpoints import TrainState, schedule_step

    config = small_config(patience=3, reduce_lr_patience=2, reduce_lr_factor=0.5, lr=1e-3, monitor="val_loss").validated()
    state = TrainState(lr=1e-3)
    events = [schedule_step(state, {"epoch": e, "val_loss": v}, config) for e, v in enumerate([0.5, 0.4, 0.45, 0.41, 0.6], start=1)]
    assert events[0] == ["best"] and events[1] == ["best"]
    assert state.best_epoch == 2 and state.best_value == pytest.approx(0.4)
    assert events[3] == ["lr->0.0005"] and state.lr == pytest.approx(5e-4)
    assert "early-stop" in events[4] and state.stopped and "epoch 5" in state.stopped


def test_schedule_step_nan_never_improves():
    from robustlab.training.checkpoints import TrainState, schedule_step

    config = small_config(patience=1, monitor="val_loss").validated()
    state = TrainState(lr=1e-3)
    schedule_step(state, {"epoch": 1, "val_loss": float("nan")}, config)
    assert state.best_value is None and state.stopped


def test_guard_flags_pgd_collapse_only_when_fgsm_holds():
    from robustlab.training.checkpoints import TrainState, guard_collapse, schedule_step

    history = [
        {"epoch": 1, "guard_fgsm_accuracy": 0.55, "guard_pgd_accuracy": 0.45, "event": "best"},
        {"epoch": 2, "guard_fgsm_accuracy": 0.60, "guard_pgd_accuracy": 0.50, "event": "best"},
    ]
    collapse = {"epoch": 3, "guard_fgsm_accuracy": 0.80, "guard_pgd_accuracy": 0.05, "val_mix_loss": 0.1}
    reason = guard_collapse(history, collapse, 0.2)
    assert reason and "epoch 3" in reason and "50.0%" in reason and "5.0%" in reason
    # both falling is not catastrophic overfitting (just a bad epoch)
    assert guard_collapse(history, {"epoch": 3, "guard_fgsm_accuracy": 0.30, "guard_pgd_accuracy": 0.05}, 0.2) is None
    # a small PGD dip is not a collapse
    assert guard_collapse(history, {"epoch": 3, "guard_fgsm_accuracy": 0.70, "guard_pgd_accuracy": 0.40}, 0.2) is None
    # a collapsed epoch is never the best one, even with the lowest loss, and it stops training
    config = small_config().validated()
    state = TrainState(lr=1e-3, best_value=0.3, best_epoch=2)
    assert schedule_step(state, collapse, config, collapse=reason) == ["collapse"]
    assert state.best_epoch == 2 and state.stopped == reason


# --------------------------------------------------------------------------- the model


def test_trainable_selection_and_frozen_batchnorm(ft):
    from robustlab.detector.loading import load_detector
    from robustlab.training.config import select_trainable

    det = load_detector(ft["spec"])
    info = select_trainable(det, "head", False)
    assert info["layers"] == ["head"]
    assert {v.path.split("/")[0] for v in det.model.trainable_variables} == {"head"}
    info = select_trainable(det, "all", False)
    assert info["frozen_batchnorm"] == 1
    assert not any("batch_normalization" in v.path for v in det.model.trainable_variables)
    info = select_trainable(det, "all", True)
    assert any("batch_normalization" in v.path for v in det.model.trainable_variables)
    info = select_trainable(det, "last:2", False)
    assert info["layers"] == ["conv2d_1", "head"] or len(info["layers"]) == 2


@pytest.mark.parametrize("attack", ["fgsm", "fgsm-rs", "pgd"])
def test_training_attack_is_bounded_and_hurts(ft, attack):
    import tensorflow as tf

    from robustlab.attacks.tf_backend import adversarial_examples
    from robustlab.detector.loading import load_detector

    det = load_detector(ft["spec"])
    x, y = ft["x"][:24], ft["y"][:24]
    spec = small_config(attack=attack, eps=EPS, pgd_steps=5).validated().attack_spec()
    adv = adversarial_examples(det, x, y, spec, seed=(1, 2))
    assert adv.dtype == np.float32 and adv.shape == x.shape
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    x01 = x.astype(np.float32) / 255.0
    linf = np.abs(adv - x01).reshape(len(x), -1).max(axis=1)
    assert np.all(linf <= EPS + 1e-6) and linf.max() > 0.9 * EPS
    again = adversarial_examples(det, x, y, spec, seed=(1, 2))
    assert np.array_equal(adv, again)  # same seed, same weights -> same images

    def loss(images):
        logits = det.class_logits(tf.constant(images), training=False)
        return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y.astype(np.int32), logits)))

    assert loss(adv) > loss(x01)


def test_savedmodel_cannot_be_trained(ft, tmp_path):
    import keras

    from robustlab.detector.loading import load_detector
    from robustlab.training.config import FinetuneConfig
    from robustlab.training.run import adv_train

    model = keras.saving.load_model(ft["model"])
    model.export(tmp_path / "sm", verbose=False)
    det = load_detector(tmp_path / "sm", scale="0-1", input_size="32x32", output="sigmoid")
    with pytest.raises(RobustlabError) as info:
        adv_train(det, ft["train"], ft["val"], out=tmp_path / "new", config=FinetuneConfig(epochs=1))
    msg = info.value.one_line()
    assert "cannot be trained" in msg and "inference only" in msg and "\n" not in msg
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))


def test_model_without_trainable_weights(ft, tmp_path):
    import keras
    from keras import layers

    from robustlab.detector.loading import load_detector
    from robustlab.training.config import FinetuneConfig
    from robustlab.training.run import adv_train

    inp = keras.Input((SIZE, SIZE, 3))
    x = layers.BatchNormalization()(inp)  # the only weights, frozen unless --train-bn
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Reshape((3, 1))(x)
    x = layers.Cropping1D((0, 2))(x)
    out = layers.Flatten()(x)
    keras.Model(inp, out).save(tmp_path / "bn_only.keras")
    det = load_detector(tmp_path / "bn_only.keras", scale="0-1", output="logits")
    with pytest.raises(RobustlabError, match="no trainable weights with --trainable all"):
        adv_train(det, ft["train"], ft["val"], out=tmp_path / "new", config=FinetuneConfig(epochs=1))


def test_bad_data_is_refused(ft, tmp_path):
    import shutil

    from robustlab.detector.loading import load_detector
    from robustlab.training.run import adv_train

    det = load_detector(ft["spec"])
    shutil.copytree(ft["train"] / "fake", tmp_path / "one" / "fake")
    with pytest.raises(RobustlabError, match="only one class"):
        adv_train(det, tmp_path / "one", ft["val"], out=tmp_path / "a", config=small_config())
    with pytest.raises(RobustlabError, match="no validation set"):
        adv_train(det, ft["train"], None, out=tmp_path / "b", config=small_config())
    with pytest.raises(RobustlabError, match="no such file"):
        adv_train(det, ft["train"], tmp_path / "missing", out=tmp_path / "c", config=small_config())
    with pytest.raises(RobustlabError, match="--out holds an input"):  # --force must never delete the input model
        adv_train(det, ft["train"], ft["val"], out=ft["model"].parent, config=small_config(), force=True)
    assert ft["model"].exists()


# --------------------------------------------------------------------------- a whole run


def test_outputs_of_a_run(ft, finished):
    from robustlab.detector.loading import load_detector
    from robustlab.runs import read_run

    result = finished["result"]
    new = ft["root"] / "new"
    assert result.out == new.resolve()
    assert sha(ft["model"]) == finished["model_sha_before"]  # the input model is never modified
    assert not list(new.parent.glob(".new.*")) and not (new / "checkpoints").exists()
    for name in ("model.keras", "detector.yaml", "history.csv", "history.png", "train.json", "before-after/comparison.md", "before-after/comparison.csv"):
        assert (new / name).is_file(), name
    import yaml

    spec = yaml.safe_load((new / "detector.yaml").read_text())
    assert spec["model"] == "model.keras"
    assert spec["input_size"] == [SIZE, SIZE] and spec["scale"] == "0-1" and spec["color"] == "rgb" and spec["resize"] == "bilinear"
    assert spec["output"] == "sigmoid" and spec["classes"] == ["fake"] and spec["positive"] == "fake"
    assert 0.0 <= spec["threshold"] <= 1.0 and spec["threshold"] == pytest.approx(result.threshold, abs=1e-6)
    lines = (new / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,lr,loss,accuracy") and len(lines) == 3
    assert [r["epoch"] for r in finished["rows"]] == [1, 2]
    for r in result.history:
        assert 0.4 < r["adv_share"] <= 0.6  # --ratio 0.5 of every batch was attacked
        assert 0.0 <= r["guard_pgd_accuracy"] <= 1.0 and 0.0 <= r["val_adv_accuracy"] <= 1.0
    train = json.loads((new / "train.json").read_text())
    assert train["complete"] and train["best_epoch"] in (1, 2) and train["guard_baseline"]["pgd"] <= train["guard_baseline"]["clean"]
    before, after = read_run(new / "before-after" / "before"), read_run(new / "before-after" / "after")
    keys = lambda rows: [(r["set"], r["variant"], r["param"]) for r in rows]  # noqa: E731
    assert keys(before["rows"]) == keys(after["rows"])
    assert {"clean", "adversarial", "corrupted"} <= {r["set"] for r in after["rows"]}
    assert after["run"]["detector"]["spec_file"] == str(new.resolve() / "detector.yaml")
    assert after["run"]["threshold"] == pytest.approx(result.threshold)
    comp = {(r["set"], r["variant"]): r for r in result.comparison}
    assert comp[("clean", "none")]["accuracy_before"] == before["rows"][0]["accuracy"]
    assert comp[("clean", "none")]["accuracy_after"] == after["rows"][0]["accuracy"]
    table = (new / "before-after" / "comparison.md").read_text()
    assert "Original Images" in table and "FGSM Adversarial Images (eps=8/255)" in table and "JPEG" in table
    det = load_detector(new / "detector.yaml")
    scores = det.scores(ft["x"][:5])
    assert scores.shape == (5,) and scores.dtype == np.float64


def test_existing_out_is_refused(ft, finished, tmp_path):
    from robustlab.detector.loading import load_detector
    from robustlab.training.run import adv_train

    det = load_detector(ft["spec"])
    with pytest.raises(RobustlabError, match="already exists"):
        adv_train(det, ft["train"], ft["val"], out=ft["root"] / "new", config=small_config())
    assert (ft["root"] / "new" / "model.keras").exists()


def test_resume_after_a_stop_gives_the_uninterrupted_result(ft, finished):
    """Stop after epoch 1 (KeyboardInterrupt, as Ctrl-C), resume: same weights as the run in one go."""
    import keras

    from robustlab.detector.loading import load_detector
    from robustlab.training.folder import partial_dir
    from robustlab.training.run import adv_train, resume_adv_train

    out = ft["root"] / "resumed"

    def stop(row: dict) -> None:
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    det = load_detector(ft["spec"])
    light = dict(eval_attacks=[], eval_corruptions=[])  # the before/after set does not change training
    with pytest.raises(KeyboardInterrupt):
        adv_train(det, ft["train"], ft["val"], out=out, config=small_config(), on_epoch_end=stop, **light)
    partial = partial_dir(out)
    assert not out.exists() and (partial / "checkpoints" / "LATEST").read_text().strip() == "epoch-0001"
    with pytest.raises(RobustlabError, match="interrupted adv-train"):
        adv_train(det, ft["train"], ft["val"], out=out, config=small_config(), **light)
    with pytest.raises(RobustlabError, match="epochs is 3"):
        resume_adv_train(out, expect={"epochs": 3})
    result = resume_adv_train(out)
    assert not partial.exists() and (out / "model.keras").exists()
    ref = keras.saving.load_model(ft["root"] / "new" / "model.keras")
    got = keras.saving.load_model(out / "model.keras")
    for a, b in zip(ref.weights, got.weights):  # (seed-generator states are not saved in .keras files)
        assert np.array_equal(np.asarray(a), np.asarray(b)), a.path
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert strip(result.history) == strip(finished["result"].history)
    assert result.threshold == finished["result"].threshold
    with pytest.raises(RobustlabError, match="finished"):
        resume_adv_train(out)


def test_plain_fine_tuning_with_head_only_keeps_the_body(ft, tmp_path):
    import keras

    from robustlab.detector.loading import load_detector
    from robustlab.training.run import adv_train

    det = load_detector(ft["spec"])
    result = adv_train(
        det, ft["train"], ft["val"], out=tmp_path / "head", config=small_config(epochs=1, ratio=0.0, trainable="head", lr=0.05, guard=False),
        eval_attacks=[], eval_corruptions=[],
    )
    assert result.history[0]["adv_share"] == 0.0 and "guard_pgd_accuracy" not in result.history[0]
    old = keras.saving.load_model(ft["model"])
    new = keras.saving.load_model(tmp_path / "head" / "model.keras")
    changed = {v.path for v, w in zip(old.weights, new.weights) if not np.array_equal(np.asarray(v), np.asarray(w))}
    assert changed and all(p.startswith("head/") for p in changed)
    assert all(layer.trainable for layer in new.layers)  # the saved model keeps the input's trainable flags


@pytest.mark.slow
def test_adversarial_training_raises_adversarial_accuracy(ft, tmp_path):
    """FGSM mixing at eps=8/255 makes the validation set more robust than the input detector."""
    from robustlab.detector.loading import load_detector
    from robustlab.training.run import adv_train

    det = load_detector(ft["spec"])
    result = adv_train(
        det, ft["train"], ft["val"], out=tmp_path / "robust", config=small_config(epochs=4, ratio=0.5, lr=3e-3, pgd_steps=5),
        eval_attacks=["fgsm:eps=8/255", "pgd:eps=8/255,steps=5"], eval_corruptions=[],
    )
    comp = {(r["set"], r["variant"]): r for r in result.comparison}
    assert comp[("adversarial", "fgsm")]["accuracy_after"] > comp[("adversarial", "fgsm")]["accuracy_before"]
    assert comp[("adversarial", "pgd")]["accuracy_after"] > comp[("adversarial", "pgd")]["accuracy_before"]


def test_a_diverging_loss_stops_the_run_and_publishes_nothing(ft):
    """A loss that becomes NaN (lr 1e30) stops training with a one-line error: no NEW, no partial
    folder left to resume, the input model untouched."""
    from robustlab.detector.loading import load_detector
    from robustlab.training.folder import partial_dir
    from robustlab.training.run import adv_train

    out = ft["root"] / "diverged"
    before = sha(ft["model"])
    config = small_config(epochs=2, optimizer="sgd", lr=1e30, ratio=0.0, guard=False)
    with pytest.raises(RobustlabError, match="training diverged: the loss is nan at epoch 1") as info:
        adv_train(load_detector(ft["spec"]), ft["train"], ft["val"], out=out, config=config, eval_attacks=[], eval_corruptions=[])
    assert "--lr" in info.value.one_line()
    assert not out.exists() and not partial_dir(out).exists()
    assert sha(ft["model"]) == before


def test_threshold_sits_in_the_middle_of_the_val_plateau():
    """max-F1 on separable VAL scores: the library picks the lowest fake score (top of the plateau);
    adv-train takes the middle, with the same VAL predictions."""
    from robustlab.training.run import pick_val_threshold

    y = np.asarray([0, 0, 0, 1, 1, 1])
    s = np.asarray([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    t, note = pick_val_threshold(y, s, "max-f1")
    assert t == pytest.approx(0.5) and "middle of its plateau" in note
    assert np.array_equal(s >= t, y == 1)
    assert pick_val_threshold(y, s, "fixed:0.75")[0] == 0.75
