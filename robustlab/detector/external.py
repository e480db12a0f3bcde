"""Detectors that are not Keras models: an .onnx file run by ONNX Runtime, or a trusted Python scorer ``module:function``; both score images but have no input gradient (black-box attacks only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from robustlab.detector.model import ExternalModel, OnnxModel, PythonScorer
from robustlab.detector.spec import DetectorSpec
from robustlab.enums import OutputKind
from robustlab.errors import RobustlabError, exception_line

# --------------------------------------------------------------------------- models run outside TensorFlow

ONNX_INSTALL = "pip install 'robustlab[onnx]' (or pip install onnxruntime)"
_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
_ONNX_ACTIVATIONS = {"Sigmoid": "sigmoid", "Softmax": "softmax", "Gemm": "linear", "MatMul": "linear", "Add": "linear", "Conv": "linear"}


def _refuse_keys(spec: DetectorSpec, keys: tuple[str, ...], what: str) -> None:
    """A one-line RobustlabError when the spec sets one of ``keys`` (to other than its default),
    which do not apply to ``what``. Values, not the keys said: a spec round-tripped through
    ``to_dict`` says every key."""
    from robustlab.detector.spec import DEFAULT_SCALE
    from robustlab.enums import ColorOrder

    unset = {"color": ColorOrder.RGB, "scale": DEFAULT_SCALE, "custom_objects": ()}
    said = [k for k in keys if getattr(spec, k) != unset.get(k)]
    if said:
        raise RobustlabError(
            f"{', '.join(said)} does not apply to {what}",
            thing=spec.source or spec.model,
            fix=f"remove {', '.join(k + ':' for k in said)} from the spec",
        )


def _onnx_layout(shape: list[Any], path: Path) -> tuple[str, tuple]:
    """(``NHWC`` | ``NCHW``, the input shape as NHWC with None for symbolic dims) from an ONNX input shape."""
    dims = tuple(d if isinstance(d, int) and d > 0 else None for d in shape)
    if len(dims) != 4:
        raise RobustlabError(f"the ONNX model's input shape {list(shape)} is not an image batch", thing=path, fix="export the model with a (N, H, W, 3) or (N, 3, H, W) input")
    first, last = dims[1] == 3, dims[3] == 3
    if last and not first:
        return "NHWC", dims
    if first and not last:
        return "NCHW", (dims[0], dims[2], dims[3], 3)
    raise RobustlabError(
        f"cannot tell the channel axis of the ONNX model's input shape {list(shape)}",
        thing=path,
        fix="export the model with a fixed 3-channel axis: (N, H, W, 3) or (N, 3, H, W)",
    )


def _load_onnx(spec: DetectorSpec, trust_model: bool, info: dict[str, Any]) -> tuple[ExternalModel, tuple, tuple | None]:
    """An ``.onnx`` file in an ONNX Runtime CPU session: (model, NHWC input shape, output shape or None).

    The file is data (ONNX Runtime runs only its built-in operators), so it needs no trust; it is
    checked to be a whole ONNX protobuf first (:func:`robustlab.detector.safety.scan_onnx`).
    """
    from robustlab.detector.onnxfile import scan_onnx

    path = spec.model
    _refuse_keys(spec, ("weights", "custom_objects"), "an .onnx model (its weights are in the file, and it holds no code)")
    scanned = scan_onnx(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise RobustlabError("reading an .onnx model needs ONNX Runtime, which is not installed", thing=path, fix=ONNX_INSTALL) from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ONNX Runtime's warnings go to stderr otherwise
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own classes per cause
        raise RobustlabError(f"ONNX Runtime cannot load the model: {exception_line(exc)}", thing=path, fix="check the file (an opset or operator ONNX Runtime supports)") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs[:4])
        raise RobustlabError(
            f"the ONNX model has {len(inputs)} inputs ({names})",
            thing=path,
            fix="robustlab feeds one image tensor: export the model with a single (N, H, W, 3) or (N, 3, H, W) input (the others as constants)",
        )
    if len(outputs) != 1:
        raise RobustlabError(f"the ONNX model has {len(outputs)} outputs", thing=path, fix="export the model with one output (1 or 2 units)")
    dtype = _ONNX_DTYPES.get(inputs[0].type)
    if dtype is None:
        raise RobustlabError(f"the ONNX model's input is {inputs[0].type}, not a float tensor", thing=path, fix="export the model with a float32 image input (robustlab's scale: sets its range)")
    layout, in_shape = _onnx_layout(list(inputs[0].shape), path)
    out_dims = [d if isinstance(d, int) and d > 0 else None for d in outputs[0].shape]
    out_shape = (None, *out_dims[1:]) if len(out_dims) >= 2 and all(d is not None for d in out_dims[1:]) else None
    last_op = scanned.output_ops.get(outputs[0].name)
    model = OnnxModel(session, path, layout=layout, dtype=dtype, batch=in_shape[0], last_activation=_ONNX_ACTIVATIONS.get(last_op or ""))
    info.update({
        "format": "onnx",
        "path": str(path),
        "file": scanned.describe(),
        "code": [],
        "loader": f"onnxruntime {ort.__version__} InferenceSession (CPU; {layout} input {inputs[0].name!r}; ONNX graph, no Python code; no gradients)",
        "framework": "onnxruntime",
    })  # fmt: skip
    if last_op:
        info["last_op"] = last_op
    return model, in_shape, out_shape


def _load_scorer(spec: DetectorSpec, trust_model: bool, info: dict[str, Any]) -> tuple[ExternalModel, tuple, tuple | None]:
    """A trusted Python scorer ``"module:function"``: (model, input shape, output shape (None, 1)).

    Importing the module runs its code, so it needs ``trust_model``; the spec must give
    ``input_size`` (there is no model to read it from). The function gets uint8 RGB images and
    returns P(fake): the spec's color, scale, output, weights and encoder do not apply.
    """
    import importlib

    ref = str(spec.scorer)
    thing = spec.source or ref
    if not trust_model:
        raise RobustlabError(f"model {ref} is a Python function: importing its module runs code", thing=thing, fix="pass --trust-model if you trust that module")
    if spec.input_size is None:
        raise RobustlabError(f"a Python scorer ({ref}) has no input shape to read", thing=thing, fix="set input_size: [H, W] in the spec (or pass --input-size)")
    _refuse_keys(spec, ("weights", "custom_objects", "label_encoder", "color", "scale"), f"a Python scorer ({ref} gets RGB uint8 images and does its own preprocessing)")
    if spec.output not in (None, OutputKind.SIGMOID):
        raise RobustlabError(f"output: {spec.output} does not apply to a Python scorer ({ref} returns a probability)", thing=thing, fix="remove output: from the spec")
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise RobustlabError(f"cannot import the scorer's module {module_name}: {exception_line(exc, 160)}", thing=thing, fix=f"put {module_name}.py on PYTHONPATH, or fix the module") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise RobustlabError(f"module {module_name} has no function {attr}", thing=thing, fix=f"define {attr}(x_uint8) in {module_name}, or fix model:")
    info.update({
        "format": "python",
        "path": ref,
        "file": f"Python function {ref} from {getattr(module, '__file__', None) or module_name}",
        "code": [f"Python scorer {ref} imported (--trust-model)"],
        "loader": f"Python scorer {ref} (trusted; uint8 RGB in, P(fake) out; no gradients)",
        "framework": "python",
        "output_from": "a Python scorer returns a probability",
    })  # fmt: skip
    h, w = spec.input_size
    return PythonScorer(ref, function), (None, h, w, 3), (None, 1)


_EXTERNAL_LOADERS: dict[str, Callable[[DetectorSpec, bool, dict[str, Any]], tuple[ExternalModel, tuple, "tuple | None"]]] = {
    "onnx": _load_onnx,
    "python": _load_scorer,
}
