"""Hostile detector files and specs (issue 12): SavedModel graphs that do file I/O, Lambda layers
hidden in old or nested config layouts, zip bombs, deeply nested JSON, and spec values that YAML
turns into the wrong type. Every file is written by the test itself; each case checks the exit
code, the one-line message, and that no file under the test folder changed (nor appeared)."""
from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SIZE, assert_one_line_error, make_images, run, write_class_folder

from robustlab.detector.spec import DetectorSpec, make_spec, read_spec
from robustlab.errors import RobustlabError


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative posix path -> hex)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def val(tmp_path: Path) -> Path:
    x, y = make_images(6, seed=3)
    return write_class_folder(tmp_path / "val", x, y)


def refused(tmp_path: Path, detector: Path, val: Path, *needles: str, flags: tuple[str, ...] = ()) -> None:
    """``robustlab threshold DETECTOR VAL`` exits 2 with one line holding ``needles``; nothing under
    ``tmp_path`` changed."""
    before = snapshot(tmp_path)
    res = run("threshold", str(detector), str(val), "--bootstrap", "0", "-q", *flags)
    assert_one_line_error(res, *needles)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- SavedModel graphs


def save_module(folder: Path, serve_body) -> Path:
    """A SavedModel whose ``serving_default`` maps float32 (N, 32, 32, 3) to {"p": (N, 1)} after
    running ``serve_body(x)`` (the hostile part)."""
    import tensorflow as tf

    class Detector(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(0.01)

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def serve(self, x):
            serve_body(x)
            return {"p": tf.sigmoid(self.w * tf.reduce_mean(x, axis=[1, 2, 3]))[:, None]}

    module = Detector()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


def test_savedmodel_writing_a_file_is_refused_untrusted_and_runs_trusted(tmp_path, val):
    import tensorflow as tf

    target = tmp_path / "pwned.txt"
    sm = save_module(tmp_path / "sm", lambda x: tf.io.write_file(str(target), "written by the model"))
    refused(tmp_path, sm, val, "WriteFile", "__inference_serve", "writes a file", "--trust-model", str(sm))
    assert not target.exists()
    res = run("threshold", str(sm), str(val), "--bootstrap", "0", "-q", "--trust-model")
    assert res.exit_code == 0, res.output
    assert target.read_text() == "written by the model"  # trusted: the graph is the user's code


@pytest.mark.parametrize(
    "body, needles",
    [
        pytest.param(lambda x: __import__("tensorflow").io.read_file("/etc/hostname"), ("ReadFile", "reads a file"), id="read-file"),
        pytest.param(lambda x: __import__("tensorflow").io.matching_files("/*"), ("MatchingFiles",), id="list-files"),
        pytest.param(
            lambda x: __import__("tensorflow").print(x[0, 0, 0], output_stream="file:///tmp/robustlab-hostile-print.txt"),
            ("PrintV2", "prints to 'file:///tmp/robustlab-hostile-print.txt'"),
            id="print-to-file",
        ),
        pytest.param(
            lambda x: __import__("tensorflow").raw_ops.RestoreV2(prefix="/tmp/other-ckpt", tensor_names=["w"], shape_and_slices=[""], dtypes=[__import__("tensorflow").float32]),
            ("RestoreV2", "outside the variables restore", "__inference_serve"),
            id="restore-outside-the-saver",
        ),
        pytest.param(
            lambda x: __import__("tensorflow").py_function(lambda v: v, [x], __import__("tensorflow").float32),
            ("EagerPyFunc", "runs Python code"),
            id="py-function",
        ),
    ],
)
def test_savedmodel_graph_ops_outside_the_allow_list_are_refused(tmp_path, val, body, needles):
    Path("/tmp/robustlab-hostile-print.txt").unlink(missing_ok=True)  # the print-to-file case's target (a fixed path in its graph)
    sm = save_module(tmp_path / "sm", body)
    refused(tmp_path, sm, val, *needles, str(sm))
    assert not Path("/tmp/robustlab-hostile-print.txt").exists()


def test_savedmodel_that_prints_to_stderr_or_asserts_loads_untrusted(tmp_path, val):
    import sys

    import tensorflow as tf

    def body(x):
        tf.debugging.assert_greater_equal(tf.reduce_min(x), -1.0)
        tf.print("mean", tf.reduce_mean(x), output_stream=sys.stderr)

    sm = save_module(tmp_path / "sm", body)
    res = run("threshold", str(sm), str(val), "--bootstrap", "0", "-q")
    assert res.exit_code == 0, res.output


def test_truncated_saved_model_pb_is_one_line(tmp_path, val):
    import tensorflow as tf

    sm = save_module(tmp_path / "sm", lambda x: tf.constant(0))
    pb = sm / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:300])
    refused(tmp_path, sm, val, "saved_model.pb", "not a readable SavedModel")


# --------------------------------------------------------------------------- Lambda layers in every config layout


def tf_keras_h5_with_lambda(path: Path, *, layout: str) -> Path:
    """A tf-keras .h5 whose Lambda layer hides in ``layout``: ``list-sequential`` (Keras <= 2.2:
    ``config`` is the layer list), ``nested-list-sequential`` (that Sequential inside a Functional
    model) or ``time-distributed`` (a wrapper holding the Lambda)."""
    import h5py
    import tf_keras as k

    lam = k.layers.Lambda(lambda t: t * 1.0, name="hidden_code")
    if layout == "time-distributed":
        inp = k.Input((4, 8))
        model = k.Model(inp, k.layers.Dense(1, activation="sigmoid")(k.layers.Flatten()(k.layers.TimeDistributed(lam)(inp))))
    else:
        seq = k.Sequential([k.Input((SIZE, SIZE, 3)), lam, k.layers.GlobalAveragePooling2D(), k.layers.Dense(1, activation="sigmoid")], name="inner")
        model = seq
        if layout == "nested-list-sequential":
            inp = k.Input((SIZE, SIZE, 3))
            model = k.Model(inp, seq(inp))
    model.save(path, save_format="h5")
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        if layout == "list-sequential":
            cfg["config"] = cfg["config"]["layers"]
        elif layout == "nested-list-sequential":
            inner = next(layer for layer in cfg["config"]["layers"] if layer["class_name"] == "Sequential")
            inner["config"] = inner["config"]["layers"]
        f.attrs["model_config"] = json.dumps(cfg)
    return path


@pytest.mark.parametrize("layout", ["list-sequential", "nested-list-sequential", "time-distributed"])
def test_lambda_in_any_config_layout_is_refused_naming_the_file(tmp_path, val, layout):
    model = tf_keras_h5_with_lambda(tmp_path / "old.h5", layout=layout)
    refused(tmp_path, model, val, str(model), "Lambda layer 'hidden_code'", "bytecode", "--trust-model")


def test_list_form_sequential_is_scanned_like_the_dict_form(tmp_path):
    from robustlab.detector.safety import scan_model_file

    mf = scan_model_file(tf_keras_h5_with_lambda(tmp_path / "old.h5", layout="list-sequential"), "h5")
    assert [la.name for la in mf.lambdas] == ["hidden_code"]
    assert mf.layer_count >= 3 and mf.top_layers >= 3


# --------------------------------------------------------------------------- archives


def keras_archive(path: Path, members: dict[str, "bytes | tuple[bytes, int]"]) -> Path:
    """A zip at ``path``; a member given as (chunk, n) is ``chunk`` repeated n times, streamed."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            if isinstance(data, tuple):
                chunk, n = data
                with z.open(name, "w", force_zip64=True) as fh:
                    for _ in range(n):
                        fh.write(chunk)
            else:
                z.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "members, needles",
    [
        pytest.param({"config.json": (b" " * 2**20, 80), "model.weights.h5": b"x"}, ("config.json", "zip bomb", "83,886,080 bytes"), id="over-the-size-limit"),
        pytest.param({"config.json": (b" " * 2**20, 6), "model.weights.h5": b"x"}, ("config.json", "zip bomb"), id="over-the-inflation-ratio"),
        pytest.param(
            {"config.json": b'{"class_name": "Functional", "config": {"layers": []}}', "metadata.json": (b"\n" * 2**20, 70), "model.weights.h5": b"x"},
            ("metadata.json", "zip bomb"),
            id="metadata-bomb",
        ),
        pytest.param({"config.json": b"[" * 100_000, "model.weights.h5": b"x"}, ("nested too deeply",), id="deep-json"),
        pytest.param(
            {"config.json": b'{"class_name": "Functional", "config": {"layers": []}}', "model.weights.h5": (b"\0" * 2**20, 100)},
            ("model.weights.h5", "zip bomb"),
            id="weights-bomb",
        ),
        pytest.param(
            {"config.json": b'{"class_name": "Functional", "config": {"layers": []}}', "model.weights.h5": b"x", "assets/blob": (b"\0" * 2**20, 100)},
            ("assets/blob", "zip bomb"),
            id="asset-bomb",
        ),
    ],
)
def test_hostile_keras_archives_are_one_line(tmp_path, val, members, needles):
    model = keras_archive(tmp_path / "bomb.keras", members)
    assert model.stat().st_size < 2**20  # small on disk, huge when inflated
    refused(tmp_path, model, val, str(model), *needles)


# --------------------------------------------------------------------------- spec values


@pytest.mark.parametrize(
    "line, needle",
    [
        ("threshold: yes", "threshold True is not a number"),
        ("threshold: no", "threshold False is not a number"),
        ("threshold: .nan", "not a finite number"),
        ("threshold: .inf", "not a finite number"),
        ("threshold: 1.5", "outside [0, 1]"),
        ("threshold: [0.5]", "threshold [0.5] is not a number"),
        ("threshold: '1e999'", "not a finite number"),
        ("input_size: [0, 0]", "out of range"),
        ("input_size: [-32, 32]", "out of range"),
        ("input_size: [yes, yes]", "input_size True is not a number"),
        ("input_size: [32.5, 32]", "not a whole number"),
        ("input_size: [32, 32, 3]", "is not two integers"),
        ("input_size: .inf", "input_size inf is not a finite number"),
        ("input_size: true", "is not two integers"),
        ("model: [a.keras, b.keras]", "model ['a.keras', 'b.keras'] is not text"),
        ("model: yes", "model True is not text"),
        ("resize: false", "unknown resize method"),
        ("color: {a: 1}", "color {'a': 1} is not text"),
        ("scale: 1", "unknown scale"),
        ("name: {a: 1}", "name {'a': 1} is not text"),
        ("1: x", "unknown key(s) '1'"),
        ("custom_objects: {A: [1]}", "custom_objects A [1] is not text"),
        ("positive: yes", "positive"),
        ("classes: [yes]", "must name real and/or fake"),
    ],
)
def test_spec_values_are_type_checked_and_finite(tmp_path, val, line, needle):
    spec = tmp_path / "spec.yaml"
    spec.write_text(("" if line.startswith("model:") else "model: m.keras\n") + line + "\n", encoding="utf-8")
    refused(tmp_path, spec, val, str(spec), needle)


def test_a_valid_spec_still_reads(tmp_path):
    spec = make_spec({"model": "m.keras", "threshold": 1, "input_size": "64x48", "scale": "0-1", "name": 7}, base_dir=tmp_path)
    assert spec.threshold == 1.0 and spec.input_size == (64, 48) and spec.name == "7"
    assert make_spec({"model": "m.keras", "input_size": [32.0, "32"]}, base_dir=tmp_path).input_size == (32, 32)


# --------------------------------------------------------------------------- properties of the spec parser

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
KEYS = st.sampled_from(["name", "model", "weights", "input_size", "resize", "color", "scale", "output", "classes", "positive", "threshold", "label_encoder", "custom_objects"])
NEAR_VALID = {
    "input_size": st.one_of(VALUES, st.lists(st.integers(-5, 5000) | st.floats() | st.booleans(), max_size=3), st.text(alphabet="0123456789x, .-", max_size=10)),
    "threshold": st.one_of(VALUES, st.floats(), st.text(alphabet="0123456789.e-+naif", max_size=8)),
    "classes": st.one_of(VALUES, st.lists(st.sampled_from(["real", "fake", "REAL", "x", ""]), max_size=3)),
}


def spec_values():
    near = st.fixed_dictionaries({}, optional={k: v for k, v in NEAR_VALID.items()})
    wild = st.dictionaries(KEYS | st.text(max_size=6) | st.integers(), VALUES, max_size=5)
    model = st.fixed_dictionaries({}, optional={"model": st.just("m.keras") | VALUES})
    return st.tuples(model, near, wild).map(lambda t: {**t[2], **t[1], **t[0]})


def check_spec(spec: DetectorSpec) -> None:
    assert isinstance(spec.threshold, float) and math.isfinite(spec.threshold) and 0.0 <= spec.threshold <= 1.0
    if spec.input_size is not None:
        assert all(type(v) is int and 8 <= v <= 4096 for v in spec.input_size)
    assert isinstance(spec.name, str) and isinstance(spec.model, Path)
    assert spec.positive in ("real", "fake")
    assert all(isinstance(a, str) and isinstance(b, str) for a, b in spec.custom_objects)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(spec_values())
def test_make_spec_gives_a_valid_spec_or_a_one_line_error(tmp_path_factory, values):
    try:
        spec = make_spec(values, base_dir=tmp_path_factory.getbasetemp())
    except RobustlabError as exc:
        assert "\n" not in exc.one_line()
    else:
        check_spec(spec)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(spec_values() | st.text(max_size=40).map(lambda t: {"raw": t}))
def test_read_spec_on_any_yaml_gives_a_valid_spec_or_a_one_line_error(tmp_path_factory, values):
    import yaml

    path = tmp_path_factory.getbasetemp() / "hypothesis-spec.yaml"
    if set(values) == {"raw"}:
        path.write_text(values["raw"], encoding="utf-8", errors="surrogatepass")
    else:
        path.write_text(yaml.safe_dump(values, allow_unicode=True, sort_keys=False), encoding="utf-8", errors="surrogatepass")
    try:
        spec = read_spec(path)
    except RobustlabError as exc:
        assert "\n" not in exc.one_line()
    else:
        check_spec(spec)


def test_np_numbers_from_a_library_caller_are_accepted(tmp_path):
    spec = make_spec({"model": "m.keras", "threshold": np.float32(0.25), "input_size": [np.int64(40), 40]}, base_dir=tmp_path)
    assert spec.threshold == 0.25 and spec.input_size == (40, 40)
