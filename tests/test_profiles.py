"""The detector profiles in configs/detectors/, one per seed detector family, end to end.

Each test builds the family's architecture untrained, saves it the way its project did, puts the
profile YAML beside it (as a user would), and runs `robustlab evaluate` and `robustlab attack`
through the profile on images that need resizing: crops of scikit-learn's sample photos larger
than the model input, and small images smaller than it. robustlab's clean scores must equal the
project's own *training* pipeline, written here from its README (decoding, resize, colour order,
scaling, class order), on the same files:

* cifake-efficientnetb2, cnn3-128: ``keras.utils.load_img(path, target_size=...)`` (Pillow NEAREST).
* effatt-efficientnetb7: ``cv2.imread`` + ``cv2.resize`` (INTER_LINEAR), BGR float32 0-255.
* openforensics-efficientnetv2b0: ``image_dataset_from_directory`` (``tf.io.decode_image`` +
  ``tf.image.resize`` bilinear), float32 batches. robustlab rounds that resize to uint8, so its
  scores may differ from the float pipeline's by what half a grey level moves the model (measured
  here: about 2e-6; the tolerance is 1e-3).

Sizes: the quick tests use a tiny convolutional backbone (EfficientNet's internal 1/255 rescaling, a
DepthwiseConv2D and BatchNorm) under each project's real head at its real input size; the slow ones
(``-m slow``) use the real EfficientNet backbones with ``weights=None``: EfficientNetB2 at 32 px,
EfficientNetV2B0 at 256 px, and EfficientNetB7 (64 M parameters) at 64 px rather than 128 (the
copied profile's input_size is changed to match) to stay within a minute.
"""
from __future__ import annotations

import csv
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.detector.spec import read_spec

PROFILES = Path(__file__).resolve().parents[1] / "configs" / "detectors"


# --------------------------------------------------------------------------- the architectures


def tiny_features(L: Any, x: Any) -> Any:
    """Layers shaped like an EfficientNet feature extractor on raw 0-255 pixels (applied to ``x``)."""
    x = L.Rescaling(1.0 / 255.0)(x)
    x = L.Conv2D(8, 3, strides=4, padding="same", activation="swish")(x)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.BatchNormalization()(x)
    # 3x3, not 1x1: TF 2.21's oneDNN conv2d_backprop_filter aborts the process on a 1x1 stride-2
    # Conv2D over 8 channels at >= 64x64 (seen while writing these tests)
    return L.Conv2D(16, 3, strides=2, padding="same", activation="swish")(x)


def backbone(K: Any, kind: str, size: int) -> Any:
    """A nested feature-extractor model: the tiny one, or a keras.applications EfficientNet (weights=None)."""
    if kind == "tiny":
        inp = K.layers.Input((size, size, 3))
        return K.Model(inp, tiny_features(K.layers, inp), name="tiny_backbone")
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
    """CemRoot: one flat model, EfficientNet (include_top=False) -> BatchNorm -> attention block
    (Dropout 0.5, 1x1 convs 256, 128, 128, 1 -> sigmoid mask, widened to the feature depth by a 1x1
    conv of ones) -> RescaleGAP Lambda = GAP(mask * features) / GAP(mask) -> Dropout(0.5) ->
    Dense(64, relu, L2 1e-5) -> Dropout(0.25) -> Dense(2, softmax) = [fake, real]."""
    L = K.layers
    if kind == "tiny":
        inp = L.Input((size, size, 3))
        features = tiny_features(L, inp)
    else:  # the backbone's own input and output: its layers are the model's layers
        base = backbone(K, kind, size)
        inp, features = base.input, base.output
    bn = L.BatchNormalization()(features)
    depth = int(bn.shape[-1])
    a = L.Conv2D(256, 1, padding="same", activation="relu")(L.Dropout(0.5)(bn))
    a = L.Conv2D(128, 1, padding="same", activation="relu")(a)
    a = L.Conv2D(128, 1, padding="same", activation="relu")(a)
    a = L.Conv2D(1, 1, padding="valid", activation="sigmoid")(a)
    up = L.Conv2D(depth, 1, padding="same", activation="linear", use_bias=False, weights=[np.ones((1, 1, 1, depth), np.float32)])
    a = up(a)
    gf = L.GlobalAveragePooling2D()(L.Multiply()([a, bn]))
    gm = L.GlobalAveragePooling2D()(a)
    gap = L.Lambda(lambda t: t[0] / t[1], name="RescaleGAP")([gf, gm])
    x = L.Dropout(0.5)(gap)
    x = L.Dense(64, activation="relu", kernel_regularizer=K.regularizers.l2(1e-5))(x)
    x = L.Dropout(0.25)(x)
    return K.Model(inp, L.Dense(2, activation="softmax")(x))


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


# --------------------------------------------------------------------------- the projects' training pipelines
# Each: (model, data folder, relative paths, input size) -> the project's P(fake) per path.


def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False), np.float64)


def _load_img_batch(folder: Path, paths: list[str], size: int, divide: float = 1.0) -> np.ndarray:
    """keras.utils.load_img(target_size) -> img_to_array (float32) -> / divide, as the README's pipeline."""
    import keras

    return np.stack([keras.utils.img_to_array(keras.utils.load_img(folder / p, target_size=(size, size))) / divide for p in paths]).astype(np.float32)


def cifake_pipeline(model: Any, folder: Path, paths: list[str], size: int) -> np.ndarray:
    return _predict(model, _load_img_batch(folder, paths, size))[:, 0]  # the unit is P(fake)


def cnn3_pipeline(model: Any, folder: Path, paths: list[str], size: int) -> np.ndarray:
    return 1.0 - _predict(model, _load_img_batch(folder, paths, size, 255.0))[:, 0]  # P(real)


def effatt_pipeline(model: Any, folder: Path, paths: list[str], size: int) -> np.ndarray:
    """cv2.imread (BGR) -> cv2.resize((size, size)) -> float32 0-255; output [Fake, Real]."""
    import cv2

    x = np.stack([cv2.resize(cv2.imread(str(folder / p)), (size, size)).astype(np.float32) for p in paths])
    return _predict(model, x)[:, 0]


def openforensics_pipeline(model: Any, folder: Path, paths: list[str], size: int) -> np.ndarray:
    """image_dataset_from_directory(image_size=(size, size)) float32 batches; the unit is P(real)."""
    import keras

    ds = keras.utils.image_dataset_from_directory(folder, image_size=(size, size), batch_size=8, shuffle=False, labels=None)
    x = np.concatenate([b.numpy() for b in ds])
    by_path = {Path(f).relative_to(folder).as_posix(): i for i, f in enumerate(ds.file_paths)}
    p_real = _predict(model, x)[:, 0]
    return np.array([1.0 - p_real[by_path[p]] for p in paths])


@dataclass(frozen=True)
class Family:
    """A seed detector family: its profile, how its project saved the model, its training pipeline."""

    profile: str
    framework: str  # the Keras its project used: "keras" (3) or "tf_keras" (2)
    build: Callable[..., Any]
    save: Callable[[Any, Path], None]
    p_fake: Callable[[Any, Path, list[str], int], np.ndarray]  # the project's own pipeline on the files
    size: int
    loaded_by: str  # what robustlab ends up loading it with: Keras 3 when it can read the file
    needs_trust: bool = False  # label_transform.pkl beside the model
    tolerance: float = 2e-5  # |robustlab - pipeline| per score: float32 round-off when the pixels are equal


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


FAMILIES = {
    "cifake-b2": Family("cifake-efficientnetb2.yaml", "keras", cifake_b2, _save_h5("final_model.h5"), cifake_pipeline, 32, "keras"),
    "effatt-b7": Family("effatt-efficientnetb7.yaml", "tf_keras", effatt, _save_effatt, effatt_pipeline, 128, "tf_keras", needs_trust=True),
    # robustlab rounds TF's float resize to uint8 (<= 0.5 levels per pixel): measured 1.3e-6 (tiny) and 1.9e-6 (EfficientNetV2B0)
    "openforensics-v2b0": Family("openforensics-efficientnetv2b0.yaml", "tf_keras", openforensics_v2b0, _save_json_weights, openforensics_pipeline, 256, "tf_keras", tolerance=1e-3),
    "cnn3": Family("cnn3-128.yaml", "tf_keras", cnn3, _save_h5("MODELdeepfakedetector.h5"), cnn3_pipeline, 128, "keras"),
}


def needs_resizing(size: int, n_per_class: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Per class: n-2 crops of the sample photos (1.5x to 3x the input side, never square) and 2 small
    images (half the input side): uint8 RGB arrays, none at the input size; labels (fake = 1)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    images, labels = [], []
    for label in (0, 1):
        for i in range(n_per_class):
            if i < n_per_class - 2:
                photo = photos[(i + label) % 2]
                h = min(photo.shape[0], int(size * rng.uniform(1.5, 3.0)))
                w = min(photo.shape[1], h + int(rng.integers(7, 40)))
                y0, x0 = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
                images.append(np.ascontiguousarray(photo[y0 : y0 + h, x0 : x0 + w]))
            else:
                s = max(8, size // 2)
                low = rng.integers(0, 256, (s // 4 + 1, s // 4 + 1, 3))
                images.append(np.clip(np.kron(low, np.ones((4, 4, 1)))[:s, : s + 3] + rng.normal(0, 12, (s, s + 3, 3)), 0, 255).astype(np.uint8))
            labels.append(label)
    return images, np.asarray(labels, np.int64)


def build_family(name: str, kind: str, folder: Path, n_per_class: int = 6, seed: int = 0, size: int | None = None) -> dict[str, Any]:
    """Model files + the profile beside them + a real/fake PNG folder of images that need resizing
    + the project's own scores for them. ``size`` replaces the profile's input size (slow B7 test)."""
    import importlib

    from PIL import Image

    fam = FAMILIES[name]
    size = size or fam.size
    K = importlib.import_module(fam.framework)
    K.utils.set_random_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    model = fam.build(K, kind, size) if kind else fam.build(K, size=size)
    fam.save(model, folder)
    text = (PROFILES / fam.profile).read_text()
    if size != fam.size:
        text = text.replace(f"input_size: [{fam.size}, {fam.size}]", f"input_size: [{size}, {size}]")
    (folder / fam.profile).write_text(text)
    images, y = needs_resizing(size, n_per_class, seed + 1)
    data = folder / "data"
    paths = []
    for i, (img, label) in enumerate(zip(images, y)):
        rel = f"{'fake' if label else 'real'}/img_{i:04d}.png"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(data / rel)
        paths.append(rel)
    assert all(img.shape[:2] != (size, size) for img in images)
    ref = dict(zip(paths, map(float, fam.p_fake(model, data, paths, size))))
    return {"spec": folder / fam.profile, "data": data, "ref": ref, "family": fam, "size": size, "params": int(model.count_params())}


# --------------------------------------------------------------------------- tests


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# profile -> (input size, color, scale, output, classes, label encoder, (resize, decode, alpha, bit16, exif))
EXPECTED = {
    # trained (and evaluated) through keras.utils.load_img: Pillow decode, convert("RGB"), NEAREST
    "cifake-efficientnetb2.yaml": ((32, 32), "rgb", "0-255", "sigmoid", ("fake",), None, ("pil-nearest", "pil", "drop", "clip", "ignore")),
    "cnn3-128.yaml": ((128, 128), "rgb", "0-1", "sigmoid", ("real",), None, ("pil-nearest", "pil", "drop", "clip", "ignore")),
    # its Streamlit app: Image.open(...).convert("RGB").resize((128, 128)) = Pillow BICUBIC
    "cnn3-128-app.yaml": ((128, 128), "rgb", "0-1", "sigmoid", ("real",), None, ("pil-bicubic", "pil", "drop", "clip", "ignore")),
    # trained with OpenCV: cv2.imread + cv2.resize, BGR 0-255
    "effatt-efficientnetb7.yaml": ((128, 128), "bgr", "0-255", "softmax", None, "label_transform.pkl", ("cv2-linear", "cv2", "drop", "shift", "apply")),
    # the Gradio app's three modes: a PIL image from the upload, cv2.resize, then BGR 0-255 / RGB 0-1 /
    # preprocess_input (which passes EfficientNet's input through: RGB 0-255)
    "effatt-efficientnetb7-app-match.yaml": ((128, 128), "bgr", "0-255", "softmax", None, "label_transform.pkl", ("cv2-linear", "pil", "drop", "clip", "apply")),
    "effatt-efficientnetb7-app-simple.yaml": ((128, 128), "rgb", "0-1", "softmax", None, "label_transform.pkl", ("cv2-linear", "pil", "drop", "clip", "apply")),
    "effatt-efficientnetb7-app-imagenet.yaml": ((128, 128), "rgb", "0-255", "softmax", None, "label_transform.pkl", ("cv2-linear", "pil", "drop", "clip", "apply")),
    # trained with image_dataset_from_directory: tf.io.decode_image + tf.image.resize bilinear
    "openforensics-efficientnetv2b0.yaml": ((256, 256), "rgb", "0-255", "sigmoid", ("real",), None, ("tf-bilinear", "tf", "drop", "shift", "ignore")),
    # its Streamlit app: Image.open(...).resize((256, 256)) = Pillow BICUBIC
    "openforensics-efficientnetv2b0-app.yaml": ((256, 256), "rgb", "0-255", "sigmoid", ("real",), None, ("pil-bicubic", "pil", "drop", "clip", "ignore")),
}


def test_profiles_say_what_the_seeds_say():
    assert sorted(p.name for p in PROFILES.glob("*.yaml")) == sorted(EXPECTED)
    for name, (size, color, scale, output, classes, encoder, pre) in EXPECTED.items():
        spec = read_spec(PROFILES / name)
        assert (spec.input_size, str(spec.color), str(spec.scale), str(spec.output), spec.classes) == (size, color, scale, output, classes), name
        assert tuple(str(getattr(spec, k)) for k in ("resize", "decode", "alpha", "bit16", "exif")) == pre, name
        said = set(spec.said)
        assert {"resize", "decode"} <= said and (pre[1] != "pil" or {"alpha", "bit16", "exif"} <= said), f"{name}: the rules are written out"
        assert spec.positive == "fake" and spec.threshold == 0.5
        assert (spec.label_encoder.name if spec.label_encoder else None) == encoder
        assert spec.model.parent == PROFILES  # relative to the profile: copy it beside the model
        if name.endswith("-app.yaml") or "-app-" in name:  # a serving profile names the training one it differs from
            training = read_spec(PROFILES / (name.split("-app")[0] + ".yaml"))
            assert (spec.model, spec.input_size) == (training.model, training.input_size), name
            assert spec.preprocessing != training.preprocessing or spec.color != training.color or spec.scale != training.scale, name
            assert f"--skew {name}" in (PROFILES / name).read_text(), name  # how to measure the skew
            assert name in (PROFILES / (name.split("-app")[0] + ".yaml")).read_text(), name  # the training profile names its app
    effatt_spec = read_spec(PROFILES / "effatt-efficientnetb7.yaml")
    assert dict(effatt_spec.custom_objects) == {"RescaleGAP": "robustlab.layers:rescale_gap"}
    assert read_spec(PROFILES / "openforensics-efficientnetv2b0.yaml").weights.name == "dffnetv2B0.h5"


def _scores(run_dir: Path, set_name: str) -> dict[str, float]:
    with open(run_dir / "predictions.csv", newline="") as fh:
        return {r["path"]: float(r["score"]) for r in csv.DictReader(fh) if r["set"] == set_name}


def _rows(run_dir: Path) -> dict[str, dict]:
    rows = json.loads((run_dir / "metrics.json").read_text())["rows"]
    return {r["set"] + ("" if r["set"] == "clean" else f":{r['variant']}"): r for r in rows}


def check_family(name: str, kind: str, tmp_path: Path, *, with_evaluate: bool = True, size: int | None = None) -> None:
    """evaluate (unless ``with_evaluate`` is False) and attack through the profile; the clean scores
    of each run must equal the project's own training pipeline."""
    case = build_family(name, kind, tmp_path / name, size=size)
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
        assert info["input_size"] == [case["size"]] * 2 and "weights_check" in info
        spec = read_spec(case["spec"])
        assert info["spec"]["resize"] == str(spec.resize) and info["spec"]["decode"] == str(spec.decode)  # run.json names the backend
        libraries = json.loads((run_dir / "run.json").read_text())["versions"]
        assert {"pillow", "tensorflow", "opencv-python"} <= set(libraries)  # the resize and decode libraries, with versions
        got = _scores(run_dir, "clean")
        assert sorted(got) == sorted(case["ref"])
        for path, want in case["ref"].items():  # robustlab = the project's own training pipeline, as P(fake)
            assert got[path] == pytest.approx(want, abs=fam.tolerance), path
        if name == "effatt-b7":
            assert info["classes"] == ["fake", "real"] and "label encoder" in info["classes_from"]
            assert any("replaced by robustlab.layers:rescale_gap" in n for n in info["code"])


QUICK = [("cifake-b2", "tiny"), ("effatt-b7", "tiny"), ("openforensics-v2b0", "tiny"), ("cnn3", "")]
SLOW = [("cifake-b2", "EfficientNetB2", None), ("effatt-b7", "EfficientNetB7", 64), ("openforensics-v2b0", "EfficientNetV2B0", None)]


@pytest.mark.parametrize("name, kind", QUICK, ids=[n for n, _ in QUICK])
def test_profile_end_to_end(name, kind, tmp_path):
    check_family(name, kind, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name, kind, size", SLOW, ids=[f"{n}-{k}" for n, k, _ in SLOW])
def test_profile_end_to_end_with_efficientnet(name, kind, size, tmp_path):
    check_family(name, kind, tmp_path, with_evaluate=False, size=size)  # attack's run has the clean scores too
