"""Hostile detectors outside TensorFlow: broken or odd .onnx files, and Python scorers that are
untrusted, unimportable or return garbage. Each is exit 2 with one line naming the thing and the fix."""
from __future__ import annotations

import sys
from pathlib import Path

import onnx  # the test extra has onnx and onnxruntime: a missing one fails, never skips
import pytest
from conftest import assert_one_line_error, make_images, run, write_class_folder
from test_detector_formats import onnx_checkerboard, spec_file, write_scorer


@pytest.fixture
def data(tmp_path: Path) -> Path:
    x, y = make_images(4, seed=7)
    return write_class_folder(tmp_path / "data", x, y)


def evaluate(spec: "Path | str", data: Path, tmp_path: Path, *args: str):
    return run("evaluate", str(spec), str(data), "--out", str(tmp_path / "run"), *args)


# --------------------------------------------------------------------------- .onnx files


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated-half"),
        pytest.param(lambda b: b[:-3], id="truncated-tail"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, id="garbage"),
        pytest.param(lambda b: b"ir_version: 8\ngraph { }\n", id="text"),
    ],
)
def test_a_broken_onnx_file_is_one_line(tmp_path, data, damage):
    good = onnx_checkerboard(tmp_path / "good.onnx").read_bytes()
    (tmp_path / "bad.onnx").write_bytes(damage(good))
    res = evaluate(spec_file(tmp_path, "bad.onnx", scale="'0-1'"), data, tmp_path)
    assert_one_line_error(res, "bad.onnx", "not a valid ONNX model", "re-export")


def test_an_onnx_model_with_two_inputs_is_refused_with_the_fix(tmp_path, data):
    onnx_checkerboard(tmp_path / "two.onnx", inputs=2)
    res = evaluate(spec_file(tmp_path, "two.onnx", scale="'0-1'"), data, tmp_path)
    assert_one_line_error(res, "two.onnx", "2 inputs (image, bias)", "single")


def test_onnx_without_a_channel_axis_of_3_is_refused(tmp_path, data):
    onnx_checkerboard(tmp_path / "m.onnx", layout="NCHW", batch="N")
    model = onnx.load(tmp_path / "m.onnx")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_param = "C"  # channels symbolic, width not 3: no axis says "3 channels"
    (tmp_path / "c.onnx").write_bytes(model.SerializeToString())
    res = evaluate(spec_file(tmp_path, "c.onnx", scale="'0-1'"), data, tmp_path)
    assert_one_line_error(res, "c.onnx", "channel axis", "(N, 3, H, W)")


def test_onnx_tensor_data_outside_its_folder_is_refused(tmp_path, data):
    from onnx import TensorProto

    onnx_checkerboard(tmp_path / "m.onnx")
    model = onnx.load(tmp_path / "m.onnx")
    kernel = model.graph.initializer[0]
    kernel.ClearField("raw_data")
    kernel.ClearField("float_data")
    kernel.data_location = TensorProto.EXTERNAL
    entry = kernel.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    (tmp_path / "ext.onnx").write_bytes(model.SerializeToString())
    res = evaluate(spec_file(tmp_path, "ext.onnx", scale="'0-1'"), data, tmp_path)
    assert_one_line_error(res, "ext.onnx", "outside its folder", "beside the model")


def test_onnx_spec_keys_that_do_not_apply_are_refused(tmp_path, data):
    onnx_checkerboard(tmp_path / "m.onnx")
    (tmp_path / "w.h5").write_bytes(b"")
    res = evaluate(spec_file(tmp_path, "m.onnx", weights="w.h5"), data, tmp_path)
    assert_one_line_error(res, "weights does not apply to an .onnx model", "remove weights:")


def test_onnx_without_onnxruntime_names_the_pip_install(tmp_path, data, monkeypatch):
    onnx_checkerboard(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    res = evaluate(spec_file(tmp_path, "m.onnx", scale="'0-1'"), data, tmp_path)
    assert_one_line_error(res, "m.onnx", "needs ONNX Runtime", "pip install 'robustlab[onnx]'")


# --------------------------------------------------------------------------- Python scorers


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_scorer_without_trust_model_is_refused_before_import(on_path, data, tmp_path):
    marker = tmp_path / "imported"
    ref = write_scorer(on_path, "rl_hostile_untrusted", f"open({str(marker)!r}, 'w').close()\ndef score(x):\n    return x.mean(axis=(1, 2, 3)) / 255\n")
    res = evaluate(spec_file(tmp_path, ref, input_size="[32, 32]"), data, tmp_path)
    assert_one_line_error(res, "rl_hostile_untrusted:score", "runs code", "--trust-model")
    assert not marker.exists()  # the module was never imported


def test_a_scorer_without_input_size_is_refused(on_path, data, tmp_path):
    ref = write_scorer(on_path, "rl_hostile_nosize")
    res = evaluate(spec_file(tmp_path, ref), data, tmp_path, "--trust-model")
    assert_one_line_error(res, "rl_hostile_nosize:score", "no input shape", "input_size: [H, W]")


@pytest.mark.parametrize(
    "body, needle",
    [
        pytest.param("    return np.zeros((len(x), 2))", "shape (", id="wrong-shape"),
        pytest.param("    return np.full(len(x), np.nan)", "NaN or infinite", id="nan"),
        pytest.param("    return np.full(len(x), 1.5)", "outside [0, 1]", id="above-one"),
        pytest.param("    return -x.mean(axis=(1, 2, 3))", "outside [0, 1]", id="negative"),
        pytest.param("    return 'fake'", "not numbers", id="text"),
        pytest.param("    raise KeyError('weights')", "raised KeyError", id="raises"),
    ],
)
def test_a_scorer_returning_garbage_is_one_line_naming_the_function(on_path, data, tmp_path, body, needle, request):
    module = "rl_hostile_returns_" + request.node.callspec.id.replace("-", "_")
    ref = write_scorer(on_path, module, f"import numpy as np\n\n\ndef score(x):\n{body}\n")
    res = evaluate(spec_file(tmp_path, ref, input_size="[32, 32]"), data, tmp_path, "--trust-model")
    assert_one_line_error(res, ref, needle)


def test_a_scorer_turning_to_nan_under_attack_is_one_line(on_path, data, tmp_path):
    """Valid on clean images, NaN on the attacker's queries: the error surfaces in the attack, still one line."""
    body = "import numpy as np\n\n\ndef score(x):\n    p = x.mean(axis=(1, 2, 3)) / 255\n    return np.where(x.std(axis=(1, 2, 3)) > 60, np.nan, p)\n"
    ref = write_scorer(on_path, "rl_hostile_late_nan", body)
    res = evaluate(spec_file(tmp_path, ref, input_size="[32, 32]"), data, tmp_path, "--trust-model", "--attack", "square:eps=64/255,queries=5", "--attack-fraction", "1")
    assert_one_line_error(res, ref, "NaN")


@pytest.mark.parametrize(
    "module, body, needle",
    [
        pytest.param("rl_hostile_absent", None, "cannot import the scorer's module rl_hostile_absent", id="missing-module"),
        pytest.param("rl_hostile_syntax", "def score(x) return x\n", "SyntaxError", id="syntax-error"),
        pytest.param("rl_hostile_raises", "raise RuntimeError('no GPU here')\n", "RuntimeError: no GPU here", id="import-raises"),
        pytest.param("rl_hostile_nofunc", "def other(x):\n    return x\n", "has no function score", id="no-function"),
    ],
)
def test_an_unimportable_scorer_is_one_line(on_path, data, tmp_path, module, body, needle):
    if body is not None:
        write_scorer(on_path, module, body)
    res = evaluate(spec_file(tmp_path, f"{module}:score", input_size="[32, 32]"), data, tmp_path, "--trust-model")
    assert_one_line_error(res, needle)


@pytest.mark.parametrize("key, value", [("color", "bgr"), ("scale", "'0-1'"), ("output", "softmax")])
def test_scorer_spec_keys_that_do_not_apply_are_refused(on_path, data, tmp_path, key, value):
    ref = write_scorer(on_path, f"rl_hostile_key_{key}")
    res = evaluate(spec_file(tmp_path, ref, input_size="[32, 32]", **{key: value}), data, tmp_path, "--trust-model")
    assert_one_line_error(res, f"remove {key}:")
