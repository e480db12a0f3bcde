"""The detector profiles in configs/detectors/, one per seed detector family, end to end.

Each test builds the family's architecture untrained, saves it the way its project did, puts the
profile YAML beside it (as a user would), and runs `robustlab evaluate` and `robustlab attack`
through the profile. robustlab's clean scores must equal the project's own pipeline (its colour
order, scaling and class order) on the same images.

Sizes: the quick tests use a tiny convolutional backbone (a nested model with EfficientNet's
internal 1/255 rescaling, a DepthwiseConv2D and BatchNorm) under each project's real head and input
size; the slow ones (``-m slow``) use the real EfficientNet backbones with ``weights=None``, except
that the EfficientNetB7 + attention detector gets an EfficientNetB0 backbone (B7 has 64 M
parameters) under the same attention head, at the same 128x128 input.
"""
from __future__ import annotations

import csv
import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_images, write_class_folder

from robustlab.cli import main
from robustlab.detector.spec import read_spec

PROFILES = Path(__file__).resolve().parents[1] / "configs" / "detectors"


# --------------------------------------------------------------------------- the architectures


def tiny_backbone(K: Any, size: int, name: str = "tiny_backbone") -> Any:
    """A nested model shaped like an EfficientNet feature extractor: raw 0-255 pixels in."""
    L = K.layers
    inp = L.Input((size, size, 3))
    x = L.Rescaling(1.0 / 255.0)(inp)
    x = L.Conv2D(8, 3, strides=4, padding="same", activation="swish")(x)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.BatchNormalization()(x)
    # 3x3, not 1x1: TF 2.21's oneDNN conv2d_backprop_filter aborts the process on a 1x1 stride-2
    # Conv2D over 8 channels at >= 64x64 (seen while writing these tests)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="swish")(x)
    return K.Model(inp, x, name=name)


def backbone(K: Any, kind: str, size: int) -> Any:
    if kind == "tiny":
        return tiny_backbone(K, size)
    return getattr(K.applications, kind)(include_top=False, weights=None, input_shape=(size, size, 3))


def cifake_b2(K: Any, kind: str = "EfficientNetB2", size: int = 32) -> Any:
    """manask0412: EfficientNetB2 -> GlobalAveragePooling2D -> Dropout(0.4) -> Dense(1, sigmoid) = P(fake)."""
    L = K.layers
    base = backbone(K, kind, size)
    base.trainable = False
    inp = L.Input((size, size, 3))
    x = L.GlobalAveragePooling2D()(base(inp, training=False))
    x = L.Dropout(0.4)(x)
    return K.Model(inp, L.Dense(1, activation="sigmoid")(x))


def effatt(K: Any, kind: str = "EfficientNetB7", size: int = 128) -> Any:
    """CemRoot: frozen EfficientNet -> BN -> attention (64, 16, 8, 1 convs; fan-out) -> RescaleGAP Lambda
    -> Dense(128, relu) -> Dense(2, softmax) = [fake, real]."""
    L = K.layers
    base = backbone(K, kind, size)
    base.trainable = False
    depth = int(base.output.shape[-1])
    inp = L.Input((size, size, 3))
    bn = L.BatchNormalization()(base(inp))
    a = L.Conv2D(64, 1, padding="same", activation="relu")(L.Dropout(0.5)(bn))
    a = L.Conv2D(16, 1, padding="same", activation="relu")(a)
    a = L.Conv2D(8, 1, padding="same", activation="relu")(a)
    a = L.Conv2D(1, 1, padding="valid", activation="sigmoid")(a)
    up = L.Conv2D(depth, 1, padding="same", activation="linear", use_bias=False, weights=[np.ones((1, 1, 1, depth), np.float32)])
    up.trainable = False
    a = up(a)
    gf = L.GlobalAveragePooling2D()(L.multiply([a, bn]))
    gm = L.GlobalAveragePooling2D()(a)
    gap = L.Lambda(lambda t: t[0] / t[1], name="RescaleGAP")([gf, gm])
    d = L.Dropout(0.25)(L.Dense(128, activation="relu")(L.Dropout(0.25)(gap)))
    return K.Model(inp, L.Dense(2, activation="softmax")(d))


def openforensics_v2b0(K: Any, kind: str = "EfficientNetV2B0", size: int = 256) -> Any:
    """cdenq: EfficientNetV2B0 (rescaling inside) -> GlobalAveragePooling2D -> Dense(1, sigmoid) = P(real)."""
    L = K.layers
    base = backbone(K, kind, size)
    inp = L.Input((size, size, 3))
    x = L.GlobalAveragePooling2D()(base(inp))
    return K.Model(inp, L.Dense(1, activation="sigmoid")(x))


def cnn3(K: Any, kind: str = "", size: int = 128) -> Any:
    """deepfake-detector-Model V1: the 3-layer Sequential CNN, input RGB / 255, sigmoid = P(real)."""
    L = K.layers
    return K.Sequential(
        [
            L.Conv2D(32, (3, 3), activation="relu", input_shape=(size, size, 3)),
            L.MaxPooling2D((2, 2)),
            L.Conv2D(64, (3, 3), activation="relu"),
            L.MaxPooling2D((2, 2)),
            L.Conv2D(128, (3, 3), activation="relu"),
            L.MaxPooling2D((2, 2)),
            L.Flatten(),
            L.Dense(128, activation="relu"),
            L.Dropout(0.5),
            L.Dense(1, activation="sigmoid"),
        ]
    )


@dataclass(frozen=True)
class Family:
    """A seed detector family: its profile, how its project saved the model, its own pipeline."""

    profile: str
    framework: str  # the Keras its project used: "keras" (3) or "tf_keras" (2)
    build: Callable[..., Any]
    save: Callable[[Any, Path], None]
    p_fake: Callable[[Any, np.ndarray], np.ndarray]  # the project's own pipeline on uint8 RGB
    size: int
    loaded_by: str  # what robustlab ends up loading it with: Keras 3 when it can read the file
    needs_trust: bool = False  # label_transform.pkl beside the model


def _save_h5(name: str) -> Callable[[Any, Path], None]:
    def save(model: Any, folder: Path) -> None:
        model.save(folder / name)

    return save


def _save_effatt(model: Any, folder: Path) -> None:
    from sklearn.preprocessing import LabelBinarizer

    model.save(folder / "best_model_effatt.h5")
    (folder / "label_transform.pkl").write_bytes(pickle.dumps(LabelBinarizer().fit(["Fake", "Real"])))


def _save_json_weights(model: Any, folder: Path) -> None:
    (folder / "dffnetv2B0.json").write_text(model.to_json())
    model.save_weights(folder / "dffnetv2B0.h5")


def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False), np.float64)


FAMILIES = {
    "cifake-b2": Family("cifake-efficientnetb2.yaml", "keras", cifake_b2, _save_h5("final_model.h5"), lambda m, x: _predict(m, x.astype(np.float32))[:, 0], 32, "keras"),
    "effatt-b7": Family("effatt-efficientnetb7.yaml", "tf_keras", effatt, _save_effatt, lambda m, x: _predict(m, x[..., ::-1].astype(np.float32))[:, 0], 128, "tf_keras", needs_trust=True),
    "openforensics-v2b0": Family("openforensics-efficientnetv2b0.yaml", "tf_keras", openforensics_v2b0, _save_json_weights, lambda m, x: 1.0 - _predict(m, x.astype(np.float32))[:, 0], 256, "tf_keras"),
    "cnn3": Family("cnn3-128.yaml", "tf_keras", cnn3, _save_h5("MODELdeepfakedetector.h5"), lambda m, x: 1.0 - _predict(m, x.astype(np.float32) / 255.0)[:, 0], 128, "keras"),
}


def build_family(name: str, kind: str, folder: Path, n_per_class: int = 6, seed: int = 0) -> dict[str, Any]:
    """Model files + the profile beside them + a real/fake PNG folder at the input size + reference scores."""
    import importlib

    fam = FAMILIES[name]
    K = importlib.import_module(fam.framework)
    K.utils.set_random_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    model = fam.build(K, kind, fam.size) if kind else fam.build(K, size=fam.size)
    fam.save(model, folder)
    shutil.copy(PROFILES / fam.profile, folder / fam.profile)
    x, y = make_images(n_per_class, size=fam.size, seed=seed + 1)
    data = write_class_folder(folder / "data", x, y)
    ref = {}
    for i, (img, label) in enumerate(zip(x, y)):
        ref[f"{'fake' if label else 'real'}/img_{i:04d}.png"] = float(fam.p_fake(model, img[None])[0])
    return {"spec": folder / fam.profile, "data": data, "ref": ref, "family": fam, "params": int(model.count_params())}


# --------------------------------------------------------------------------- tests


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_profiles_say_what_the_seeds_say():
    expected = {
        "cifake-efficientnetb2.yaml": ((32, 32), "rgb", "0-255", "sigmoid", ("fake",), None),
        "effatt-efficientnetb7.yaml": ((128, 128), "bgr", "0-255", "softmax", None, "label_transform.pkl"),
        "openforensics-efficientnetv2b0.yaml": ((256, 256), "rgb", "0-255", "sigmoid", ("real",), None),
        "cnn3-128.yaml": ((128, 128), "rgb", "0-1", "sigmoid", ("real",), None),
    }
    assert sorted(p.name for p in PROFILES.glob("*.yaml")) == sorted(expected)
    for name, (size, color, scale, output, classes, encoder) in expected.items():
        spec = read_spec(PROFILES / name)
        assert (spec.input_size, str(spec.color), str(spec.scale), str(spec.output), spec.classes) == (size, color, scale, output, classes), name
        assert spec.positive == "fake" and spec.threshold == 0.5
        assert (spec.label_encoder.name if spec.label_encoder else None) == encoder
        assert spec.model.parent == PROFILES  # relative to the profile: copy it beside the model
    effatt_spec = read_spec(PROFILES / "effatt-efficientnetb7.yaml")
    assert dict(effatt_spec.custom_objects) == {"RescaleGAP": "robustlab.layers:rescale_gap"}
    assert read_spec(PROFILES / "openforensics-efficientnetv2b0.yaml").weights.name == "dffnetv2B0.h5"


def _scores(run_dir: Path, set_name: str) -> dict[str, float]:
    with open(run_dir / "predictions.csv", newline="") as fh:
        return {r["path"]: float(r["score"]) for r in csv.DictReader(fh) if r["set"] == set_name}


def _rows(run_dir: Path) -> dict[str, dict]:
    rows = json.loads((run_dir / "metrics.json").read_text())["rows"]
    return {r["set"] + ("" if r["set"] == "clean" else f":{r['variant']}"): r for r in rows}


def check_family(name: str, kind: str, tmp_path: Path, *, with_evaluate: bool = True) -> None:
    """evaluate (unless ``with_evaluate`` is False) and attack through the profile; the clean scores
    of each run must equal the project's own pipeline."""
    case = build_family(name, kind, tmp_path / name)
    spec, data, fam = str(case["spec"]), str(case["data"]), case["family"]
    trust = ["--trust-model"] if fam.needs_trust else []
    runs = []
    if with_evaluate:
        if fam.needs_trust:  # the label encoder is a pickle: refused without trust, in one line
            res = run("evaluate", spec, data, "--out", str(tmp_path / "refused"), "-q")
            assert res.exit_code == 2 and "label_transform.pkl: is a pickled label encoder" in res.stderr
            assert len(res.stderr.strip().splitlines()) == 1
        res = run("evaluate", spec, data, "--out", str(tmp_path / "eval"), "-q", *trust)
        assert res.exit_code == 0, res.output
        runs.append(tmp_path / "eval")

    res = run("attack", spec, data, "--method", "fgsm", "--eps", "8/255", "--fraction", "1", "--out", str(tmp_path / "atk"), "-q", *trust)
    assert res.exit_code == 0, res.output
    runs.append(tmp_path / "atk")
    rows = _rows(tmp_path / "atk")
    assert {"clean", "adversarial:fgsm", "mixed:fgsm"} <= set(rows)
    assert rows["adversarial:fgsm"]["n"] == 12 and rows["mixed:fgsm"]["n"] == 24
    with open(tmp_path / "atk" / "attacks.csv", newline="") as fh:
        linf = np.array([float(r["linf"]) for r in csv.DictReader(fh)])
    assert len(linf) == 12 and linf.max() <= 8.0 + 1e-9 and (linf > 0).any()  # within the budget, and gradients reached the pixels
    assert (tmp_path / "atk" / "adversarial").is_dir()

    for run_dir in runs:
        info = json.loads((run_dir / "run.json").read_text())["detector"]
        assert info["framework"] == fam.loaded_by, info["loader"]
        assert ("fallback" in info["loader"]) == (fam.loaded_by == "tf_keras")
        assert info["input_size"] == [fam.size, fam.size] and "weights_check" in info
        got = _scores(run_dir, "clean")
        assert sorted(got) == sorted(case["ref"])
        for path, want in case["ref"].items():  # robustlab = the project's own pipeline, as P(fake)
            assert got[path] == pytest.approx(want, abs=2e-5), path
        if name == "effatt-b7":
            assert info["classes"] == ["fake", "real"] and "label encoder" in info["classes_from"]
            assert any("replaced by robustlab.layers:rescale_gap" in n for n in info["code"])


QUICK = [("cifake-b2", "tiny"), ("effatt-b7", "tiny"), ("openforensics-v2b0", "tiny"), ("cnn3", "")]
SLOW = [("cifake-b2", "EfficientNetB2"), ("effatt-b7", "EfficientNetB0"), ("openforensics-v2b0", "EfficientNetV2B0")]


@pytest.mark.parametrize("name, kind", QUICK, ids=[n for n, _ in QUICK])
def test_profile_end_to_end(name, kind, tmp_path):
    check_family(name, kind, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name, kind", SLOW, ids=[f"{n}-{k}" for n, k in SLOW])
def test_profile_end_to_end_with_efficientnet(name, kind, tmp_path):
    check_family(name, kind, tmp_path, with_evaluate=False)  # attack's run has the clean scores too
