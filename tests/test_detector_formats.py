"""Detectors run outside TensorFlow: an ``.onnx`` file (ONNX Runtime) and a trusted Python scorer
``model: "module:function"``. Same Detector surface, same evaluation; black-box attacks only.

The ONNX graphs are built here with ``onnx.helper`` (no exporter): a checkerboard detector, the
trace the conftest's fakes carry. A 2x2 kernel ``[[1, -1], [-1, 1]]`` on the channel mean, the mean
absolute response, then ``sigmoid(50 m - 5)``; as a 1-unit sigmoid on an NCHW input, or a 2-unit
softmax ``[fake, real]`` on an NHWC input with a fixed batch of 1 (same P(fake) by construction).
The Python scorer computes the same function in numpy.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx  # the test extra has onnx and onnxruntime: a missing one fails, never skips
import pytest
from conftest import SIZE, assert_one_line_error, make_images, run, write_class_folder

SCORER = '''
import numpy as np


def score(x):
    """uint8 (N, H, W, 3) -> P(fake) (N,): the checkerboard detector of the ONNX graphs."""
    g = x.astype(np.float32).mean(axis=-1) / 255.0
    d = g[:, :-1, :-1] - g[:, :-1, 1:] - g[:, 1:, :-1] + g[:, 1:, 1:]
    m = np.abs(d).mean(axis=(1, 2))
    return 1.0 / (1.0 + np.exp(-(50.0 * m - 5.0)))
'''


def onnx_checkerboard(path: Path, *, layout: str = "NCHW", units: int = 1, batch: "int | str" = "N", size: int = SIZE, inputs: int = 1) -> Path:
    """Write the checkerboard detector as an ONNX file; input float32 [0, 1] RGB in ``layout``.

    ``units=1``: sigmoid P(fake); ``units=2``: softmax over [fake, real]. ``inputs=2`` adds a second
    (unused by the image path, added to the score) scalar input.
    """
    from onnx import TensorProto, helper, numpy_helper

    kernel = np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32) / 3.0
    inits = [numpy_helper.from_array(np.broadcast_to(kernel, (1, 3, 2, 2)).copy(), "k")]
    nodes = []
    shape = [batch, 3, size, size] if layout == "NCHW" else [batch, size, size, 3]
    image = "image"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]))
        image = "nchw"
    nodes += [
        helper.make_node("Conv", [image, "k"], ["conv"]),
        helper.make_node("Abs", ["conv"], ["abs"]),
        helper.make_node("GlobalAveragePool", ["abs"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["m"]),
    ]
    if units == 1:
        inits += [numpy_helper.from_array(np.array([[50.0]], np.float32), "w"), numpy_helper.from_array(np.array([-5.0], np.float32), "b")]
        nodes += [helper.make_node("Gemm", ["m", "w", "b"], ["z"]), helper.make_node("Sigmoid", ["z"], ["p"])]
    else:  # softmax([25 m - 2.5, -(25 m - 2.5)])[0] = sigmoid(50 m - 5)
        inits += [numpy_helper.from_array(np.array([[25.0, -25.0]], np.float32), "w"), numpy_helper.from_array(np.array([-2.5, 2.5], np.float32), "b")]
        nodes += [helper.make_node("Gemm", ["m", "w", "b"], ["z"]), helper.make_node("Softmax", ["z"], ["p"], axis=1)]
    graph_inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)]
    out = "p"
    if inputs == 2:
        graph_inputs.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1]))
        nodes.append(helper.make_node("Add", ["p", "bias"], ["q"]))
        out = "q"
    graph = helper.make_graph(nodes, "checkerboard", graph_inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, units])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="robustlab-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def spec_file(folder: Path, model: str, **keys: str) -> Path:
    """A detector.yaml in ``folder`` with ``model:`` and the given keys (YAML text values)."""
    lines = [f"model: {json.dumps(model)}", *(f"{k}: {v}" for k, v in keys.items())]
    path = folder / f"detector-{len(list(folder.glob('detector*.yaml')))}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_scorer(folder: Path, module: str, body: str = SCORER) -> str:
    """Write ``module.py`` into ``folder`` (already on sys.path); returns ``"module:score"``."""
    (folder / f"{module}.py").write_text(body, encoding="utf-8")
    return f"{module}:score"


@pytest.fixture
def onnx_spec(tmp_path: Path) -> Path:
    onnx_checkerboard(tmp_path / "checker.onnx")
    return spec_file(tmp_path, "checker.onnx", scale="'0-1'", name="checker-onnx")


@pytest.fixture
def data_folder(tmp_path: Path) -> Path:
    x, y = make_images(12, seed=3)
    return write_class_folder(tmp_path / "data", x, y)


def test_onnx_layouts_class_orders_and_the_python_scorer_give_one_score(tmp_path, monkeypatch):
    from robustlab.detector.loading import load_detector

    monkeypatch.syspath_prepend(str(tmp_path))
    onnx_checkerboard(tmp_path / "nchw.onnx")
    onnx_checkerboard(tmp_path / "nhwc.onnx", layout="NHWC", units=2, batch=1)
    dets = {
        "nchw-sigmoid": load_detector(spec_file(tmp_path, "nchw.onnx", scale="'0-1'")),
        "nhwc-softmax-fake-real": load_detector(spec_file(tmp_path, "nhwc.onnx", scale="'0-1'", classes="[fake, real]")),
        "python": load_detector(spec_file(tmp_path, write_scorer(tmp_path, "rl_scorer_same"), input_size="[32, 32]"), trust_model=True),
    }
    x, y = make_images(20, seed=5)
    scores = {name: d.scores(x) for name, d in dets.items()}
    for name, s in scores.items():
        assert s.dtype == np.float64 and s.shape == (len(x),) and ((s >= 0) & (s <= 1)).all(), name
        assert np.allclose(s, scores["nchw-sigmoid"], atol=1e-5), name
        assert np.mean((s >= 0.5) == y) >= 0.9, name  # it is a real detector of the conftest fakes
    nchw, nhwc, py = dets.values()
    assert (nchw.output.value, nchw.classes, nchw.input_size) == ("sigmoid", ("fake",), (32, 32))
    assert nhwc.output.value == "softmax" and nhwc.classes == ("fake", "real") and nhwc.units == 2
    assert not any(d.differentiable for d in dets.values())
    assert nchw.describe()["format"] == "onnx" and "NCHW" in nchw.describe()["loader"] and "NHWC" in nhwc.describe()["loader"]
    assert "inferred from the last layer's sigmoid" in nchw.describe()["output_from"]  # the graph ends in Sigmoid
    assert py.describe()["format"] == "python" and py.describe()["spec"]["model"] == "rl_scorer_same:score"
    real = load_detector(spec_file(tmp_path, "nchw.onnx", scale="'0-1'", positive="real"))
    assert np.allclose(real.scores(x), 1.0 - scores["nchw-sigmoid"], atol=1e-5)
    assert load_detector(py.spec, trust_model=True, threshold=0.7).threshold == 0.7  # a spec round trip keeps it loadable
    says_real = load_detector(spec_file(tmp_path, "rl_scorer_same:score", input_size="[32, 32]", classes="[real]"), trust_model=True)
    assert np.allclose(says_real.scores(x), 1.0 - scores["python"], atol=1e-6)  # classes: [real]: it returns P(real)


def test_onnx_preprocessing_is_applied_before_the_session(tmp_path):
    """scale 0-255 multiplies the [0, 1] image by 255: the 0-1 graph then sees a 255x larger trace."""
    from robustlab.detector.loading import load_detector

    onnx_checkerboard(tmp_path / "m.onnx")
    x, _ = make_images(6, seed=2)
    unit = load_detector(spec_file(tmp_path, "m.onnx", scale="'0-1'")).scores(x)
    bytes_ = load_detector(spec_file(tmp_path, "m.onnx", scale="'0-255'")).scores(x)
    assert (bytes_ > unit).all() and np.all(bytes_ > 0.99)


def test_onnx_evaluate_with_corruptions_and_square(onnx_spec, data_folder, tmp_path):
    out = tmp_path / "run"
    res = run("evaluate", str(onnx_spec), str(data_folder), "--corruption", "jpeg:2", "--attack", "square:eps=8/255,queries=20", "--attack-fraction", "1", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    by = {(r["set"], r["variant"]): r for r in rows}
    clean, square = by[("clean", "none")], by[("adversarial", "square")]
    assert ("corrupted", "jpeg") in by and by[("corrupted", "jpeg")]["n"] == 24
    assert clean["accuracy"] >= 0.9 and square["n"] == 24
    assert square["accuracy"] <= clean["accuracy"]
    info = json.loads((out / "run.json").read_text())
    assert "onnxruntime" in json.dumps(info)


def test_onnx_hsj_runs_and_does_not_raise_accuracy(onnx_spec, data_folder, tmp_path):
    out = tmp_path / "run"
    res = run("evaluate", str(onnx_spec), str(data_folder), "--attack", "hsj:queries=60", "--attack-fraction", "0.5", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    by = {(r["set"], r["variant"]): r for r in json.loads((out / "metrics.json").read_text())["rows"]}
    assert by[("adversarial", "hsj")]["n"] == 12 and by[("mixed", "hsj")]["accuracy"] <= by[("clean", "none")]["accuracy"]


@pytest.mark.parametrize("attack", ["fgsm:eps=8/255", "pgd:eps=8/255,steps=2", "apgd:eps=8/255,steps=2", "auto:eps=8/255"])
def test_white_box_attacks_on_onnx_are_refused_naming_square_and_hsj(onnx_spec, data_folder, tmp_path, attack):
    res = run("evaluate", str(onnx_spec), str(data_folder), "--attack", attack, "--out", str(tmp_path / "run"))
    assert_one_line_error(res, "ONNX", "no", "square", "hsj")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_python_scorer_evaluate_with_corruption_and_square_and_refused_fgsm(tmp_path, data_folder, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = spec_file(tmp_path, write_scorer(tmp_path, "rl_scorer_eval"), input_size="[32, 32]", name="py-checker")
    out = tmp_path / "run"
    res = run("evaluate", str(spec), str(data_folder), "--trust-model", "--corruption", "blur:3", "--attack", "square:eps=8/255,queries=20", "--attack-fraction", "1", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    by = {(r["set"], r["variant"]): r for r in json.loads((out / "metrics.json").read_text())["rows"]}
    assert by[("clean", "none")]["accuracy"] >= 0.9 and ("corrupted", "blur") in by
    assert by[("adversarial", "square")]["accuracy"] <= by[("clean", "none")]["accuracy"]
    refused = run("evaluate", str(spec), str(data_folder), "--trust-model", "--attack", "fgsm:eps=8/255", "--out", str(tmp_path / "r2"))
    assert_one_line_error(refused, "Python scorer", "square", "hsj")


def test_bare_python_scorer_on_the_command_line(tmp_path, data_folder, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = write_scorer(tmp_path, "rl_scorer_bare")
    res = run("evaluate", ref, str(data_folder), "--trust-model", "--input-size", "32,32", "--out", str(tmp_path / "run"), "-q")
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "run" / "metrics.json").read_text())["rows"]
    assert rows[0]["set"] == "clean" and rows[0]["accuracy"] >= 0.9


def test_check_differentiable_refuses_external_models_before_any_gradient(onnx_spec):
    from robustlab.attacks.art_backend import art_classifier, check_differentiable
    from robustlab.detector.loading import load_detector
    from robustlab.errors import RobustlabError

    det = load_detector(onnx_spec)
    for call in (check_differentiable, art_classifier):
        with pytest.raises(RobustlabError) as err:
            call(det)
        line = err.value.one_line()
        assert "need input gradients" in line and "square:eps=8/255" in line and "hsj:queries" in line


def test_inspect_an_onnx_detector(onnx_spec, data_folder):
    res = run("inspect", str(onnx_spec), str(data_folder))
    assert res.exit_code == 0, res.output
    assert "ONNX model" in res.output and "onnxruntime" in res.output and "sigmoid" in res.output


def test_inspect_a_python_scorer_imports_it_only_with_trust(tmp_path, data_folder, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = spec_file(tmp_path, write_scorer(tmp_path, "rl_scorer_inspect"), input_size="[32, 32]")
    trusted = run("inspect", str(spec), str(data_folder), "--trust-model")
    assert trusted.exit_code == 0, trusted.output
    assert "Python function" in trusted.output and "rl_scorer_inspect:score" in trusted.output
    untrusted = run("inspect", str(spec))
    assert "--trust-model" in untrusted.output and "loaded        no" in untrusted.output


def test_robustlab_attack_on_onnx_is_refused_naming_square_and_hsj(onnx_spec, data_folder, tmp_path):
    res = run("attack", str(onnx_spec), str(data_folder), "--method", "fgsm", "--eps", "0.03", "--out", str(tmp_path / "adv"))
    assert_one_line_error(res, "need input gradients", "square", "hsj")
    assert not (tmp_path / "adv").exists()
