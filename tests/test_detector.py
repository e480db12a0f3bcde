"""The detectors people have: Keras 2 (tf-keras) .h5, architecture JSON + weights, SavedModel, Lambda
layers, custom objects, a pickled LabelBinarizer; safe loading and the bad files. Tiny real models
saved the way their projects did, real files in tmp_path, no mocks."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_images, write_class_folder

from robustlab.cli import main
from robustlab.detector.loading import load_detector
from robustlab.errors import RobustlabError

SIZE = 16
X = np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)


def attention_head(K, *, marker: Path | None = None, size: int = SIZE, depthwise: bool = True):
    """The EfficientNetB7 + attention head on a tiny backbone, with the RescaleGAP Lambda.

    ``K`` is ``keras`` or ``tf_keras``. With ``marker``, the Lambda creates that file whenever
    it runs (the path is in the saved bytecode), so a test can tell whether the file's
    code ran. ``depthwise``: a DepthwiseConv2D as in EfficientNet (Keras 3 cannot read Keras 2's).
    """
    L = K.layers
    inp = L.Input((size, size, 3))
    x = L.Rescaling(1 / 255.0)(inp)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    if depthwise:
        x = L.DepthwiseConv2D(3, padding="same")(x)
    bn = L.BatchNormalization()(x)
    a = L.Conv2D(4, 1, padding="same", activation="relu")(L.Dropout(0.5)(bn))
    a = L.Conv2D(1, 1, padding="valid", activation="sigmoid")(a)
    up = L.Conv2D(8, 1, padding="same", activation="linear", use_bias=False)
    up.trainable = False
    a = up(a)
    gf = L.GlobalAveragePooling2D()(L.multiply([a, bn]))
    gm = L.GlobalAveragePooling2D()(a)
    if marker is None:
        gap = L.Lambda(lambda t: t[0] / t[1], name="RescaleGAP")([gf, gm])
    else:
        # the path is a constant of the lambda's code object, so it travels with the bytecode
        touch = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).touch(), t[0] / t[1])[1]")  # noqa: S307
        gap = L.Lambda(touch, name="RescaleGAP")([gf, gm])
    d = L.Dropout(0.25)(L.Dense(8, activation="relu")(L.Dropout(0.25)(gap)))
    return K.Model(inp, L.Dense(2, activation="softmax")(d))


def reference(model, x_uint8: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """The project's own pipeline: raw 0-255 floats (BGR when it read images with OpenCV)."""
    x = x_uint8.astype(np.float32)
    if bgr:
        x = x[..., ::-1]
    return np.asarray(model(x, training=False))


def write_label_binarizer(path: Path, classes=("Fake", "Real")) -> Path:
    from sklearn.preprocessing import LabelBinarizer

    path.write_bytes(pickle.dumps(LabelBinarizer().fit(list(classes))))
    return path


class _Touch:
    """Unpickling this calls open(path, "w"): it would create the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def keras2_h5(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An attention-head model saved by tf-keras (Keras 2) as .h5, whose Lambda leaves a marker."""
    import tf_keras

    root = tmp_path_factory.mktemp("k2h5")
    marker = root / "lambda-ran"
    tf_keras.utils.set_random_seed(3)
    model = attention_head(tf_keras, marker=marker)
    model.save(root / "best_model_effatt.h5")
    ref = reference(model, X, bgr=True)
    marker.unlink()
    return {"root": root, "path": root / "best_model_effatt.h5", "marker": marker, "ref": ref}


def test_keras2_h5_lambda_runs_only_with_trust(keras2_h5):
    path, marker = keras2_h5["path"], keras2_h5["marker"]
    with pytest.raises(RobustlabError, match=r"Lambda layer 'RescaleGAP' holding Python bytecode.*--trust-model.*robustlab.layers:rescale_gap"):
        load_detector(path, color="bgr", classes="fake,real")
    assert not marker.exists()  # refused before any loader saw the file

    det = load_detector(path, trust_model=True, color="bgr", classes="fake,real")
    assert marker.exists()  # the file's bytecode ran, as asked
    marker.unlink()
    assert det.info["framework"] == "tf_keras" and "fallback: keras" in det.info["loader"]
    assert "DepthwiseConv2D" in det.info["loader_fallback"][0]  # why Keras 3 could not read it
    assert "match best_model_effatt.h5" in det.info["weights_check"]
    np.testing.assert_allclose(det.scores(X), keras2_h5["ref"][:, 0], atol=1e-5)  # [fake, real]: P(fake) = unit 0
    marker.unlink()  # the lambda runs on every call too


def test_keras2_h5_lambda_replaced_by_robustlab_function_needs_no_trust(keras2_h5):
    spec = keras2_h5["root"] / "effatt.yaml"
    spec.write_text(
        "model: best_model_effatt.h5\ncolor: bgr\nscale: '0-255'\nclasses: [fake, real]\n"
        "custom_objects:\n  RescaleGAP: robustlab.layers:rescale_gap\n"
    )
    keras2_h5["marker"].unlink(missing_ok=True)
    det = load_detector(spec)
    det.scores(X)
    assert not keras2_h5["marker"].exists()  # robustlab's x[0] / x[1] ran, not the file's
    assert any("replaced by robustlab.layers:rescale_gap" in n for n in det.info["code"])
    np.testing.assert_allclose(det.scores(X), keras2_h5["ref"][:, 0], atol=1e-5)
    # gradients flow through the replaced layer and the tf-keras model (attacks need them)
    import tensorflow as tf

    x = tf.constant(X[:2].astype(np.float32) / 255.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = det.class_logits(x)[:, 1]
    assert float(tf.reduce_max(tf.abs(tape.gradient(z, x)))) > 0


def test_keras3_files_with_lambda(tmp_path):
    import keras

    keras.utils.set_random_seed(4)
    marker = tmp_path / "lambda-ran"
    model = attention_head(keras, marker=marker)
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    ref = reference(model, X)
    marker.unlink()
    for name in ("m.keras", "m.h5"):
        with pytest.raises(RobustlabError, match="Lambda layer 'RescaleGAP'"):
            load_detector(tmp_path / name)
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(f"model: {name}\ncustom_objects:\n  RescaleGAP: robustlab.layers:rescale_gap\n")
        det = load_detector(spec)
        assert not marker.exists(), name
        assert det.info["framework"] == "keras" and "fallback" not in det.info["loader"]
        np.testing.assert_allclose(det.scores(X), ref[:, 1], atol=1e-5, err_msg=name)  # default [real, fake]
        det = load_detector(tmp_path / name, trust_model=True)
        assert marker.exists(), name
        marker.unlink()
    assert "safe_mode=False" in load_detector(tmp_path / "m.keras", trust_model=True).info["loader"]


def test_architecture_json_plus_weights(tmp_path):
    """The Keras 2 way of shipping a model: model.to_json() + save_weights('x.h5')."""
    import tf_keras

    tf_keras.utils.set_random_seed(5)
    model = attention_head(tf_keras)
    (tmp_path / "arch.json").write_text(model.to_json())
    model.save_weights(tmp_path / "arch_w.h5")
    ref = reference(model, X)
    spec = tmp_path / "s.yaml"
    spec.write_text("model: arch.json\nweights: arch_w.h5\ncustom_objects:\n  RescaleGAP: robustlab.layers:rescale_gap\n")
    det = load_detector(spec)
    assert det.info["format"] == "json" and det.info["framework"] == "tf_keras"
    np.testing.assert_allclose(det.scores(X), ref[:, 1], atol=1e-5)
    # no weights: refused, never a model with random weights
    with pytest.raises(RobustlabError, match="needs its weights"):
        load_detector(tmp_path / "arch.json", trust_model=True)
    # weights found beside the JSON by its name
    (tmp_path / "arch_w.h5").rename(tmp_path / "arch.h5")
    det = load_detector(tmp_path / "arch.json", trust_model=True)
    assert det.info["weights_from"] == "found beside the JSON"
    np.testing.assert_allclose(det.scores(X), ref[:, 1], atol=1e-5)


def test_weights_of_another_architecture_are_refused(tmp_path):
    import keras

    keras.utils.set_random_seed(6)
    a = attention_head(keras, depthwise=False)
    (tmp_path / "a.json").write_text(a.to_json())
    b = attention_head(keras, depthwise=True)
    b.save_weights(tmp_path / "b.weights.h5")
    spec = tmp_path / "s.yaml"
    spec.write_text("model: a.json\nweights: b.weights.h5\ncustom_objects:\n  RescaleGAP: robustlab.layers:rescale_gap\n")
    with pytest.raises(RobustlabError, match="cannot load model"):
        load_detector(spec)


def test_half_loaded_model_is_refused(tmp_path):
    """A .keras archive missing one layer's weights is refused; the weight check tells random from loaded."""
    import keras

    from robustlab.detector.weights import file_weight_stats, model_weight_stats

    keras.utils.set_random_seed(7)
    model = attention_head(keras, depthwise=False)
    model.save(tmp_path / "full.keras")
    with zipfile.ZipFile(tmp_path / "full.keras") as z:
        members = {n: z.read(n) for n in z.namelist()}
    import h5py

    (tmp_path / "w.h5").write_bytes(members["model.weights.h5"])
    with h5py.File(tmp_path / "w.h5", "a") as f:
        dense = [k for k in f["layers"].keys() if k.startswith("dense")][-1]
        del f["layers"][dense]
    members["model.weights.h5"] = (tmp_path / "w.h5").read_bytes()
    with zipfile.ZipFile(tmp_path / "half.keras", "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    fresh = attention_head(keras, depthwise=False)  # random weights
    assert not file_weight_stats(tmp_path / "full.keras", "keras").matches(model_weight_stats(fresh))
    assert file_weight_stats(tmp_path / "full.keras", "keras").matches(model_weight_stats(model))
    spec = tmp_path / "s.yaml"
    spec.write_text("model: half.keras\ncustom_objects:\n  RescaleGAP: robustlab.layers:rescale_gap\n")
    # Keras 3.15 itself refuses this archive; robustlab's own check (above) stands behind it for
    # loaders that only warn, and the message stays one line either way
    with pytest.raises(RobustlabError, match=r"half.keras: cannot load model .*could not be loaded"):
        load_detector(spec)


def test_broken_files(tmp_path):
    import tf_keras

    model = attention_head(tf_keras)
    model.save(tmp_path / "m.h5")
    data = (tmp_path / "m.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(RobustlabError, match=r"truncated HDF5 file \([\d,]+ of [\d,]+ bytes\)"):
        load_detector(tmp_path / "cut.h5", trust_model=True)
    model.save_weights(tmp_path / "weights_only.h5")
    with pytest.raises(RobustlabError, match="holds only weights.*architecture JSON as `model:`"):
        load_detector(tmp_path / "weights_only.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(RobustlabError, match="not an HDF5 file"):
        load_detector(tmp_path / "text.h5")
    from conftest import tiny_cnn

    tiny_cnn(SIZE).save(tmp_path / "k.keras")
    with zipfile.ZipFile(tmp_path / "k.keras") as src, zipfile.ZipFile(tmp_path / "no_weights.keras", "w") as dst:
        for n in ("config.json", "metadata.json"):
            dst.writestr(n, src.read(n))
    with pytest.raises(RobustlabError, match=r"a .keras archive without model.weights.h5"):
        load_detector(tmp_path / "no_weights.keras")
    (tmp_path / "cut.json").write_text(model.to_json()[:200])
    with pytest.raises(RobustlabError, match="not valid JSON"):
        load_detector(tmp_path / "cut.json", weights=str(tmp_path / "m.h5"))


def test_model_file_without_extension_is_recognised(tmp_path):
    from conftest import tiny_cnn

    m = tiny_cnn(SIZE)
    m.save(tmp_path / "m.keras")
    (tmp_path / "m.keras").rename(tmp_path / "best_model")
    det = load_detector(tmp_path / "best_model")
    assert det.info["format"] == "keras"
    np.testing.assert_allclose(det.scores(X), reference(m, X)[:, 0], atol=1e-5)


def test_tf_keras_savedmodel_runs_as_a_graph(tmp_path):
    import tf_keras

    tf_keras.utils.set_random_seed(8)
    m = attention_head(tf_keras)
    m.save(tmp_path / "sm", save_format="tf")
    det = load_detector(tmp_path / "sm", classes="fake,real")
    assert det.info["format"] == "savedmodel" and "no Python code" in det.info["loader"]
    np.testing.assert_allclose(det.scores(X), reference(m, X)[:, 0], atol=1e-5)


CUSTOM_LAYER = '''
import keras


@keras.saving.register_keras_serializable(package="robustlab_test")
class TimesTwo(keras.layers.Layer):
    def call(self, x):
        return x * 2.0
'''


def test_custom_objects(tmp_path, monkeypatch):
    import keras

    (tmp_path / "robustlab_test_layers.py").write_text(CUSTOM_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    from robustlab_test_layers import TimesTwo  # noqa: E402

    inp = keras.Input((SIZE, SIZE, 3))
    x = TimesTwo()(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(x)).save(tmp_path / "c.keras")
    with pytest.raises(RobustlabError, match=r"custom class TimesTwo.*custom_objects \(TimesTwo: module:attribute\).*--trust-model"):
        load_detector(tmp_path / "c.keras", trust_model=True)
    spec = tmp_path / "c.yaml"
    spec.write_text("model: c.keras\ncustom_objects:\n  TimesTwo: robustlab_test_layers:TimesTwo\n")
    with pytest.raises(RobustlabError, match=r"code would be imported: TimesTwo \(robustlab_test_layers:TimesTwo\); pass --trust-model"):
        load_detector(spec)
    assert load_detector(spec, trust_model=True).info["framework"] == "keras"
    spec.write_text("model: c.keras\ncustom_objects:\n  TimesTwo: not_a_module_anywhere:TimesTwo\n")
    with pytest.raises(RobustlabError, match="cannot be imported: ModuleNotFoundError"):
        load_detector(spec, trust_model=True)


def test_label_encoder_sets_the_class_order(tmp_path):
    import keras
    from conftest import tiny_cnn

    keras.utils.set_random_seed(9)
    m = tiny_cnn(SIZE, units=2, activation="softmax")
    m.save(tmp_path / "m.keras")
    ref = reference(m, X)
    enc = write_label_binarizer(tmp_path / "label_transform.pkl")
    # found beside the model: a pickle, so it needs trust
    with pytest.raises(RobustlabError, match=r"label_transform.pkl: is a pickled label encoder \(sklearn.preprocessing._label.LabelBinarizer.*--trust-model"):
        load_detector(tmp_path / "m.keras")
    det = load_detector(tmp_path / "m.keras", trust_model=True)
    assert det.classes == ("fake", "real") and "classes_ ['Fake', 'Real']" in det.info["classes_from"]
    np.testing.assert_allclose(det.scores(X), ref[:, 0], atol=1e-6)
    # classes given in the spec: the pickle beside the model is not needed, and not read
    det = load_detector(tmp_path / "m.keras", classes="fake,real")
    assert "not read" in det.info["label_encoder"]
    # spec and encoder disagree: refused
    spec = tmp_path / "s.yaml"
    spec.write_text("model: m.keras\nlabel_encoder: label_transform.pkl\nclasses: [real, fake]\n")
    with pytest.raises(RobustlabError, match="disagree with the label encoder"):
        load_detector(spec, trust_model=True)
    # a 1-unit sigmoid trained on LabelBinarizer targets gives P(classes_[1])
    (tmp_path / "one").mkdir()
    tiny_cnn(SIZE).save(tmp_path / "one" / "m.keras")
    write_label_binarizer(tmp_path / "one" / "label_transform.pkl", ("authentic", "generated"))
    assert load_detector(tmp_path / "one" / "m.keras", trust_model=True).classes == ("fake",)
    write_label_binarizer(enc, (0, 1))
    with pytest.raises(RobustlabError, match=r"classes \['0', '1'\] do not say which is real"):
        load_detector(tmp_path / "m.keras", trust_model=True)


def test_label_encoder_with_other_classes_is_refused_even_with_trust(tmp_path):
    from conftest import tiny_cnn
    from sklearn.preprocessing import LabelBinarizer

    tiny_cnn(SIZE, units=2, activation="softmax").save(tmp_path / "m.keras")
    marker = tmp_path / "unpickled"
    lb = LabelBinarizer().fit(["Fake", "Real"])
    lb.note = _Touch(marker)
    (tmp_path / "label_transform.pkl").write_bytes(pickle.dumps(lb))
    with pytest.raises(RobustlabError, match=r"the pickle holds io.open, not only a scikit-learn LabelBinarizer"):
        load_detector(tmp_path / "m.keras", trust_model=True)
    assert not marker.exists()


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, keras2_h5) -> dict:
    import keras
    from conftest import tiny_cnn

    root = tmp_path_factory.mktemp("bad")
    x, y = make_images(4, size=SIZE, seed=2)
    write_class_folder(root / "data", x, y)
    data = keras2_h5["path"].read_bytes()
    (root / "cut.h5").write_bytes(data[: len(data) // 3])
    m = tiny_cnn(SIZE)
    (root / "arch.json").write_text(m.to_json())
    (root / "lambda").mkdir()
    (root / "lambda" / "best_model_effatt.h5").write_bytes(data)
    m.save(root / "ok.keras")
    (root / "custom.yaml").write_text("model: ok.keras\ncustom_objects:\n  Thing: no_such_module_here:Thing\n")
    (root / "pkl").mkdir()
    keras.models.load_model(root / "ok.keras").save(root / "pkl" / "m.keras")
    (root / "pkl" / "label_transform.pkl").write_bytes(pickle.dumps({"classes": ["Fake", "Real"], "x": _Touch(root / "pkl" / "ran")}))
    return {"root": root, "data": root / "data"}


@pytest.mark.parametrize(
    "target, flags, needles",
    [
        ("cut.h5", [], ["cut.h5: cannot load model: truncated HDF5 file", "download or copy"]),
        ("arch.json", [], ["arch.json: an architecture JSON needs its weights", "--weights"]),
        ("lambda/best_model_effatt.h5", [], ["Lambda layer 'RescaleGAP'", "--trust-model"]),
        ("custom.yaml", ["--trust-model"], ["custom object Thing (no_such_module_here:Thing) cannot be imported", "PYTHONPATH"]),
        ("pkl/m.keras", ["--trust-model"], ["label_transform.pkl: the pickle holds io.open", "not only a scikit-learn LabelBinarizer"]),
    ],
    ids=["truncated-h5", "json-without-weights", "lambda-untrusted", "custom-object-not-importable", "pickle-with-other-classes"],
)
def test_bad_detector_files_exit_2_with_one_line(bad_inputs, target, flags, needles, tmp_path):
    res = CliRunner().invoke(main, ["evaluate", str(bad_inputs["root"] / target), str(bad_inputs["data"]), "--out", str(tmp_path / "run"), "-q", *flags])
    assert res.exit_code == 2, res.output
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("robustlab: error: "), res.stderr
    for n in needles:
        assert n in err[0], err[0]
    assert "Traceback" not in res.output and not (tmp_path / "run").exists()
    assert not (bad_inputs["root"] / "pkl" / "ran").exists()
