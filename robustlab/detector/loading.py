"""Loading a detector: the model file in each format (.keras, .h5, SavedModel, JSON + weights, .onnx) or a trusted Python scorer ("module:function"), its label encoder and custom objects, safely.
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from robustlab.detector.external import _EXTERNAL_LOADERS
from robustlab.detector.model import Detector, _build_logit_head, _infer_output_kind
from robustlab.detector.spec import DetectorSpec, spec_with_overrides
from robustlab.enums import OutputKind
from robustlab.errors import RobustlabError, exception_line

# --------------------------------------------------------------------------- loading

BUILTIN_MODULES = ("robustlab.layers",)  # robustlab's own functions: importing them runs no foreign code
LABEL_ENCODER_NAME = "label_transform.pkl"
CLASS_SYNONYMS = {
    "real": "real", "authentic": "real", "original": "real", "genuine": "real", "pristine": "real", "human": "real", "true": "real",
    "fake": "fake", "synthetic": "fake", "generated": "fake", "ai": "fake", "ai-generated": "fake", "ai_generated": "fake",
    "deepfake": "fake", "manipulated": "fake", "forged": "fake", "artificial": "fake", "false": "fake",
}  # fmt: skip


def _import_object(ref: str, name: str, thing: str) -> Any:
    import importlib

    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise RobustlabError(f"custom object {name}: {ref!r} is not module:attribute", thing=thing, fix='write e.g. RescaleGAP: "my_layers:RescaleGAP"')
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except Exception as exc:  # noqa: BLE001 - any import failure is a user problem here
        raise RobustlabError(
            f"custom object {name} ({ref}) cannot be imported: {exc.__class__.__name__}: {' '.join(str(exc).split())[:160]}",
            thing=thing,
            fix="put the module on PYTHONPATH or fix the reference",
        ) from None


def _custom_objects(spec: DetectorSpec, trust_model: bool) -> dict[str, Any]:
    """Import the spec's ``custom_objects``; code outside robustlab.layers needs ``trust_model``."""
    if not spec.custom_objects:
        return {}
    thing = str(spec.source or spec.model)
    foreign = [(n, r) for n, r in spec.custom_objects if r.partition(":")[0] not in BUILTIN_MODULES]
    if foreign and not trust_model:
        names = ", ".join(f"{n} ({r})" for n, r in foreign)
        raise RobustlabError(
            f"the spec names custom objects whose code would be imported: {names}",
            thing=thing,
            fix="pass --trust-model if you trust that code (robustlab.layers functions need no trust)",
        )
    return {name: _import_object(ref, name, thing) for name, ref in spec.custom_objects}


def detect_format(path: Path) -> str:
    """``keras`` | ``h5`` | ``savedmodel`` | ``json`` | ``onnx`` from the path (and its first bytes),
    ``python`` for a ``"module:function"`` scorer reference, or a RobustlabError."""
    from robustlab.detector.safety import HDF5_SIGNATURE, ZIP_SIGNATURE
    from robustlab.detector.spec import SCORER_REF

    if not path.is_absolute() and SCORER_REF.match(str(path)):
        return "python"
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "savedmodel"
        raise RobustlabError("folder is not a TensorFlow SavedModel (no saved_model.pb)", thing=path, fix="point at a .keras/.h5 file or a SavedModel folder")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return "keras"
    if suffix in (".h5", ".hdf5"):
        return "h5"
    if suffix == ".json":
        return "json"
    if suffix == ".onnx":
        return "onnx"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        head = b""
    if head == HDF5_SIGNATURE:
        return "h5"
    if head[:4] == ZIP_SIGNATURE:
        return "keras"
    if head[:1] == b"{":
        return "json"
    raise RobustlabError(
        f"unknown model format {suffix or '(no extension)'}",
        thing=path,
        fix='use a .keras file, a .h5 file, a SavedModel folder, an architecture .json with weights, an .onnx file or a "module:function" scorer',
    )


def _safe_mode_scope(framework: Any, safe: bool) -> Any:
    import contextlib
    import importlib

    try:
        lib = importlib.import_module(f"{framework.__name__}.src.saving.serialization_lib")
        return lib.SafeModeScope(safe)
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        return contextlib.nullcontext()


def _weights_beside(path: Path) -> Path | None:
    """``model.json`` -> ``model.h5`` / ``model.weights.h5`` / ``model_weights.h5`` beside it."""
    for name in (f"{path.stem}.weights.h5", f"{path.stem}.h5", f"{path.stem}_weights.h5", f"{path.stem}.hdf5"):
        candidate = path.with_name(name)
        if candidate.is_file():
            return candidate
    return None


@dataclass
class _LoadPlan:
    """What :func:`_load_model` decided before any loader runs (the file was scanned, code checked)."""

    path: Path
    fmt: str
    scanned: Any  # safety.ModelFile
    trust_model: bool
    objects: dict[str, Any]  # custom objects passed to the loader
    substitutes: dict[str, Any]  # Lambda layer name -> function the spec named
    weights: Path | None
    load_path: Path  # ``path``, or a link to it named with the suffix Keras expects


def _plan_load(spec: DetectorSpec, trust_model: bool, info: dict[str, Any]) -> _LoadPlan:
    """Scan the file, import the custom objects, refuse code without trust, find the weights."""
    from robustlab.detector.safety import check_code, scan_model_file

    path = spec.model
    fmt = detect_format(path)
    scanned = scan_model_file(path, fmt)
    custom = _custom_objects(spec, trust_model)
    lambda_names = {la.name for la in scanned.lambdas}
    substitutes = {n: o for n, o in custom.items() if n in lambda_names}
    objects = {n: o for n, o in custom.items() if n not in substitutes}
    notes = check_code(scanned, trusted=trust_model, substitutes=substitutes, custom_names=set(objects))
    info.update({"format": fmt, "path": str(path), "file": scanned.describe(), "code": notes})
    weights = spec.weights
    if fmt == "json" and weights is None:
        weights = _weights_beside(path)
        if weights is None:
            raise RobustlabError(
                "an architecture JSON needs its weights, and no weights file was found beside it",
                thing=path,
                fix=f"set `weights: path/to/weights.h5` in the spec or pass --weights (looked for {path.stem}.h5 and {path.stem}.weights.h5)",
            )
        info["weights_from"] = "found beside the JSON"
    if weights is not None:
        if fmt == "savedmodel":
            raise RobustlabError("weights: does not apply to a SavedModel folder", thing=spec.source or path, fix="remove weights: from the spec")
        info["weights"] = str(weights)
    suffix = {"h5": ".h5", "keras": ".keras"}.get(fmt)
    load_path = path if suffix is None or path.suffix.lower() in (suffix, ".hdf5") else _with_suffix(path, suffix)
    return _LoadPlan(path, fmt, scanned, trust_model, objects, substitutes, weights, load_path)


# --------------------------------------------------------------------------- one loader per format


def _build_h5(k: Any, plan: _LoadPlan) -> Any:
    """An HDF5 model file: ``load_model`` with Lambda layers guarded (refused or substituted)."""
    from robustlab.detector.safety import lambda_guard

    co = {**plan.objects, "Lambda": lambda_guard(k, plan.substitutes, plan.trust_model, plan.path)}
    return k.models.load_model(str(plan.load_path), custom_objects=co, compile=False, safe_mode=not plan.trust_model)


def _build_keras(k: Any, plan: _LoadPlan) -> Any:
    """A ``.keras`` archive: ``load_model`` in safe mode, or config + weights when Lambdas are substituted."""
    from robustlab.detector.safety import substitute_lambdas

    if plan.substitutes:
        cfg, extra = substitute_lambdas(plan.scanned.config or {}, plan.substitutes)
        with _safe_mode_scope(k, not plan.trust_model):
            model = k.models.model_from_json(json.dumps(cfg), custom_objects={**plan.objects, **extra})
        model.load_weights(str(plan.load_path))
        return model
    return k.models.load_model(str(plan.load_path), custom_objects=plan.objects or None, compile=False, safe_mode=not plan.trust_model)


def _build_json(k: Any, plan: _LoadPlan) -> Any:
    """An architecture JSON (weights are loaded by the caller)."""
    from robustlab.detector.safety import lambda_guard, substitute_lambdas

    cfg, extra = substitute_lambdas(plan.scanned.config or {}, plan.substitutes)
    co = {**plan.objects, **extra, "Lambda": lambda_guard(k, plan.substitutes, plan.trust_model, plan.path)}
    with _safe_mode_scope(k, not plan.trust_model):
        return k.models.model_from_json(json.dumps(cfg), custom_objects=co)


_KERAS_BUILDERS: dict[str, Callable[[Any, _LoadPlan], Any]] = {"h5": _build_h5, "keras": _build_keras, "json": _build_json}


def _loader_how(plan: _LoadPlan) -> str:
    if plan.fmt == "keras" and plan.substitutes:
        return "model_from_json + load_weights (Lambda replaced)"
    return {"h5": "load_model (HDF5)", "keras": f"load_model (.keras, safe_mode={not plan.trust_model})", "json": "model_from_json + load_weights"}[plan.fmt]


def _load_saved_model(plan: _LoadPlan, info: dict[str, Any]) -> Any:
    """A SavedModel folder as a TFSMLayer: a TensorFlow graph (checked op by op), no Python code."""
    import keras

    try:
        model = _saved_model_layer(plan.path, keras)
    except RobustlabError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RobustlabError(f"cannot load SavedModel: {exception_line(exc)}", thing=plan.path, fix="check the folder (saved_model.pb and variables/)") from None
    info["loader"] = f"keras {keras.__version__} TFSMLayer ({model.call_endpoint}; TensorFlow graph, no Python code)"
    info["framework"] = "tensorflow"
    return model


def _frameworks() -> list[Any]:
    """Keras 3, then tf-keras (which reads Keras 2 files Keras 3 cannot)."""
    import keras

    found: list[Any] = [keras]
    try:
        import tf_keras

        found.append(tf_keras)
    except ImportError:  # pragma: no cover - tf-keras is a dependency
        pass
    return found


def _weights_mismatch(model: Any, plan: _LoadPlan, info: dict[str, Any]) -> str | None:
    """Compare the loaded weights with the file's; a message when they differ (a half-loaded model)."""
    from robustlab.detector.weights import file_weight_stats, model_weight_stats

    source = plan.weights if plan.weights is not None else plan.path
    fmt = plan.fmt if plan.weights is None else ("keras" if detect_format(plan.weights) == "keras" else "h5")
    want = file_weight_stats(source, fmt)
    if want is None:
        return None
    have = model_weight_stats(model)
    if not want.matches(have):
        return f"loaded weights do not match the file ({have.values:,} values loaded, {want.values:,} in {source.name})"
    info["weights_check"] = f"{have.arrays} arrays, {have.values:,} values match {source.name}"
    return None


def _load_keras_model(plan: _LoadPlan, info: dict[str, Any], steps: dict[str, float]) -> Any:
    """Try each Keras framework in turn; the first whose weights match the file wins."""
    import keras

    build = _KERAS_BUILDERS[plan.fmt]
    failures: list[str] = []
    for k in _frameworks():
        label = f"{'keras' if k is keras else 'tf_keras'} {k.__version__}"
        t = time.time()
        try:
            with warnings.catch_warnings(record=True) as caught:  # kept in info, not printed
                warnings.simplefilter("always")
                model = build(k, plan)
                if plan.weights is not None:
                    model.load_weights(str(plan.weights))
        except RobustlabError:
            raise
        except Exception as exc:  # noqa: BLE001 - try the next loader, report all if none works
            failures.append(f"{label}: {exception_line(exc, 160)}")
            continue
        finally:
            steps[label.split(" ")[0]] = round(time.time() - t, 3)
        t = time.time()
        mismatch = _weights_mismatch(model, plan, info)
        if mismatch is not None:
            failures.append(f"{label}: {mismatch}")
            continue
        steps["weights_check"] = round(time.time() - t, 3)
        written = f"Keras {plan.scanned.keras_version} file" if plan.scanned.keras_version else "file"
        info["loader"] = f"{label} {_loader_how(plan)}" + (f" (fallback: keras {keras.__version__} could not read this {written})" if failures else "")
        info["framework"] = "keras" if k is keras else "tf_keras"
        if failures:
            info["loader_fallback"] = failures
        messages = list(dict.fromkeys(" ".join(str(w.message).split())[:200] for w in caught))
        if messages:
            info["loader_warnings"] = messages[:5]
        return model
    raise _load_failure(plan, failures)


def _load_failure(plan: _LoadPlan, failures: list[str]) -> RobustlabError:
    """The one-line error when no framework could load the file, with the likeliest fix."""
    from robustlab.detector.safety import TRUST_FIX

    text = "; ".join(failures)
    scanned = plan.scanned
    fix = "check the file; the scan found no code to trust" if not (scanned.lambdas or scanned.custom_classes) else "check the custom_objects in the spec"
    if "marshal" in text.lower():
        fix = "the Lambda layer's bytecode was written by another Python version; replace it in the spec's custom_objects (e.g. RescaleGAP: robustlab.layers:rescale_gap)"
    elif "bytecode" in text.lower() or "lambda" in text.lower():
        fix = f"the model holds Python code; {TRUST_FIX}"
    elif "do not match" in text:
        fix = "the weights file does not belong to this architecture (refusing a half-loaded model)"
    return RobustlabError(f"cannot load model ({scanned.saved_by}): {text}", thing=plan.path, fix=fix)


def _load_model(spec: DetectorSpec, trust_model: bool) -> tuple[Any, dict[str, Any]]:
    """Load the model object; returns ``(model, info)``. ``model`` is callable on a float tensor.

    Nothing runs code from the file unless ``trust_model``: the file is scanned first
    (:mod:`robustlab.detector.safety`), Lambda layers are refused or replaced by functions the spec names,
    ``.keras`` loads in safe mode, SavedModel graphs are checked op by op. Keras 3 is tried first,
    then tf-keras (Keras 2 files); the loaded weights are checked against the file, so a
    half-loaded model is never returned.
    """
    t0 = time.time()
    info: dict[str, Any] = {}
    plan = _plan_load(spec, trust_model, info)
    if plan.fmt == "savedmodel":
        model = _load_saved_model(plan, info)
        info["load_seconds"] = round(time.time() - t0, 3)
        return model, info
    steps: dict[str, float] = {"scan": round(time.time() - t0, 3)}
    model = _load_keras_model(plan, info, steps)
    info["load_seconds"] = round(time.time() - t0, 3)
    info["load_steps_seconds"] = steps
    return model, info


def _with_suffix(path: Path, suffix: str) -> Path:
    """A link to ``path`` named ``*.suffix`` (Keras loaders go by the file name), in a temporary folder
    removed at exit."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="robustlab-model-"))
    atexit.register(shutil.rmtree, folder, True)
    link = folder / f"{path.name}{suffix}"
    try:
        link.symlink_to(path.resolve())
    except OSError:  # no symlinks here: copy
        shutil.copyfile(path, link)
    return link


def _saved_model_layer(path: Path, keras: Any) -> Any:
    """A TFSMLayer on the ``serving_default`` signature (else the first one the folder has)."""
    try:
        return keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    except ValueError:
        import tensorflow as tf

        endpoints = list(getattr(tf.saved_model.load(str(path)), "signatures", {}).keys())
        if not endpoints:
            raise RobustlabError("SavedModel has no serving signature", thing=path, fix="export it with model.export(path) or tf.saved_model.save(..., signatures=...)") from None
        return keras.layers.TFSMLayer(str(path), call_endpoint=endpoints[0])


def _class_name(value: Any) -> str | None:
    text = str(value).strip().lower()
    text = re.sub(r"^\d+[_\-\s.]*", "", text)
    return CLASS_SYNONYMS.get(text)


def label_encoder_path(spec: DetectorSpec) -> tuple[Path | None, str | None]:
    """The label encoder file and how it was found (``spec`` | ``beside the model``), or (None, None)."""
    if spec.label_encoder is not None:
        return spec.label_encoder, "spec"
    beside = (spec.model if spec.model.is_dir() else spec.model.parent) / LABEL_ENCODER_NAME
    if beside.is_file():
        return beside, "beside the model"
    return None, None


def classes_from_label_encoder(path: Path, units: int) -> tuple[tuple[str, ...], str]:
    """Output class order from a LabelBinarizer pickle: (classes, how). Reads only LabelBinarizer data."""
    from robustlab.detector.pickles import read_label_binarizer

    enc = read_label_binarizer(path)
    shown = [str(c) for c in enc.classes]
    if len(enc.classes) != 2:
        raise RobustlabError(f"the label encoder has {len(enc.classes)} classes {shown[:5]}", thing=path, fix="robustlab takes binary real/fake detectors; set classes: in the spec")
    names = [_class_name(c) for c in enc.classes]
    if None in names or len(set(names)) != 2:
        raise RobustlabError(
            f"the label encoder's classes {shown} do not say which is real and which is fake",
            thing=path,
            fix="set classes: in the spec (in output order, e.g. [fake, real])",
        )
    if units == 2:
        return (names[0], names[1]), f"label encoder {path.name}: classes_ {shown} = output units in order"
    return (names[1],), f"label encoder {path.name}: classes_ {shown}, 1 unit = P({shown[1]})"


def _tensor_shape(t: Any) -> tuple:
    shape = getattr(t, "shape", None)
    return tuple(None if d is None else int(d) for d in shape) if shape is not None else ()


def _model_io_shapes(model: Any, info: dict[str, Any]) -> tuple[tuple, tuple | None]:
    """(input shape, output shape or None when it has to be probed)."""
    inputs = getattr(model, "inputs", None)
    if inputs:
        if len(inputs) != 1:
            raise RobustlabError(f"the model has {len(inputs)} inputs", thing=info["path"], fix="robustlab takes models with one image input")
        in_shape = _tensor_shape(inputs[0])
        outputs = model.outputs
        if len(outputs) != 1:
            raise RobustlabError(f"the model has {len(outputs)} outputs", thing=info["path"], fix="robustlab takes models with one output (1 or 2 units)")
        return in_shape, _tensor_shape(outputs[0])
    # TFSMLayer: read the serving signature
    sig = getattr(model, "_endpoint_signatures", None) or {}
    specs = None
    try:
        fn = model.call_endpoint_fn  # type: ignore[attr-defined]
        args, kwargs = fn.structured_input_signature
        specs = list(kwargs.values()) or list(args)
    except Exception:  # noqa: BLE001
        specs = None
    if not specs or len(specs) != 1:
        raise RobustlabError("cannot read the SavedModel's input signature", thing=info["path"], fix="export a serving_default signature with one image input")
    del sig
    return _tensor_shape(specs[0]), None


def _encoder_to_read(spec: DetectorSpec, trust_model: bool) -> tuple[Path | None, str | None, bool]:
    """The label encoder, how it was found, and whether it sets the class order (then it needs trust)."""
    encoder, encoder_how = label_encoder_path(spec)
    if encoder is not None and not encoder.is_file():
        raise RobustlabError("label encoder file not found", thing=encoder, fix="fix `label_encoder:` in the spec (relative paths are relative to the spec file)")
    read_encoder = encoder is not None and (encoder_how == "spec" or spec.classes is None)
    if read_encoder and not trust_model:
        from robustlab.detector.pickles import scan_pickle

        held = ", ".join(scan_pickle(encoder)[:2]) or "no classes"
        raise RobustlabError(
            f"is a pickled label encoder ({held}) that sets the class order; unpickling needs trust",
            thing=encoder,
            fix="pass --trust-model to read it (robustlab reads only LabelBinarizer data from it), or set classes: in the spec",
        )
    return encoder, encoder_how, read_encoder


def _input_size(spec: DetectorSpec, in_shape: tuple, info: dict[str, Any]) -> tuple[int, int]:
    """(H, W) the images are resized to: the spec's, else the model's fixed input size."""
    thing = str(spec.model)
    if len(in_shape) != 4 or in_shape[-1] not in (3, None):
        raise RobustlabError(
            f"the model's input shape {in_shape[1:]} is not an image (H, W, 3)",
            thing=thing,
            fix="robustlab takes detectors with one RGB/BGR image input",
        )
    size = spec.input_size
    if size is None:
        if in_shape[1] is None or in_shape[2] is None:
            raise RobustlabError("the model's input size is not fixed", thing=thing, fix="set input_size: [H, W] in the spec or pass --input-size")
        info["input_size_from"] = "model input shape"
        return (int(in_shape[1]), int(in_shape[2]))
    info["input_size_from"] = "spec"
    if in_shape[1] is not None and (in_shape[1], in_shape[2]) != size:
        raise RobustlabError(
            f"input_size {size[0]}x{size[1]} does not match the model's fixed input {in_shape[1]}x{in_shape[2]}",
            thing=spec.source or thing,
            fix="remove input_size from the spec or correct it",
        )
    return size


def _probe_outputs(spec: DetectorSpec, model: Any, info: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
    """The model's outputs on two seeded random images, float64 (2, units), preprocessed as the spec says."""
    import tensorflow as tf

    det_tmp = Detector(spec, model, info, size, OutputKind.LOGITS, ("fake",), 1)
    x = tf.constant(np.random.default_rng(0).random((2, *size, 3), np.float32))
    out = model(det_tmp.preprocess(x), training=False)
    if isinstance(out, Mapping):
        out = next(iter(out.values()))
    return np.asarray(out, np.float64).reshape(2, -1)


def _output_units_and_kind(spec: DetectorSpec, model: Any, info: dict[str, Any], size: tuple[int, int], out_shape: tuple | None) -> tuple[int, OutputKind]:
    """Number of output units (1 or 2) and the output kind (the spec's, else inferred)."""
    thing = str(spec.model)
    probe = None
    if out_shape is None or spec.output is None:
        probe = _probe_outputs(spec, model, info, size)
        if out_shape is None:
            out_shape = (None, probe.shape[-1])
    units = int(np.prod([d for d in out_shape[1:] if d is not None])) if len(out_shape) > 1 else 1
    if units not in (1, 2):
        raise RobustlabError(
            f"the model's output has {units} units",
            thing=thing,
            fix="robustlab takes binary detectors: 1 unit (sigmoid or logit) or 2 units (softmax)",
        )
    if spec.output is None:
        kind, how = _infer_output_kind(model, probe)
        info.setdefault("output_from", how)
    else:
        kind = spec.output
        info["output_from"] = "spec"
    if kind is OutputKind.SOFTMAX and units == 1:
        raise RobustlabError("output: softmax with 1 unit", thing=spec.source or thing, fix="use output: sigmoid (or logits) for a 1-unit model")
    return units, kind


def _output_classes(spec: DetectorSpec, units: int, encoder: Path | None, encoder_how: str | None, read_encoder: bool, info: dict[str, Any]) -> tuple[str, ...]:
    """What the output units mean, in order: from the label encoder, the spec, or the default."""
    thing = spec.source or str(spec.model)
    classes = spec.classes
    if read_encoder:
        assert encoder is not None
        from_encoder, how = classes_from_label_encoder(encoder, units)
        info["label_encoder"] = f"{encoder} ({encoder_how})"
        if classes is not None and tuple(classes) != from_encoder:
            raise RobustlabError(f"classes {list(classes)} in the spec disagree with the label encoder ({how})", thing=thing, fix="remove classes: or label_encoder: from the spec")
        info["classes_from"] = how
        return from_encoder
    if classes is None:
        info["classes_from"] = "default: 1 unit = P(fake); 2 units = [real, fake]"
        return ("fake",) if units == 1 else ("real", "fake")
    info["classes_from"] = "spec"
    if units == 2 and len(classes) != 2:
        raise RobustlabError(f"classes {list(classes)} name {len(classes)} class(es) for a 2-unit output", thing=thing, fix="list both, in output order, e.g. [fake, real]")
    if units == 1 and len(classes) != 1:
        raise RobustlabError(f"classes {list(classes)} name 2 classes for a 1-unit output", thing=thing, fix="list the class the unit's probability is for, e.g. [fake] or [real]")
    return tuple(classes)


def load_detector(detector: "str | os.PathLike | DetectorSpec", *, trust_model: bool = False, **overrides: Any) -> Detector:
    """Load a detector from a spec YAML, a bare model path, or a :class:`DetectorSpec`.

    Keras formats and SavedModels load through :func:`_load_model`; ``.onnx`` files and
    ``"module:function"`` scorers through ``_EXTERNAL_LOADERS`` (the same spec keys, checks and
    :class:`Detector`, without gradients).

    ``overrides`` are spec keys (``input_size``, ``scale``, ``color``, ``output``, ``classes``,
    ``positive``, ``threshold``, ``resize``, ``weights``, ``name``); ``None`` values are ignored.
    """
    from robustlab._tf import import_tf

    import_tf()
    spec = spec_with_overrides(detector, overrides)
    if spec.scorer is None and not spec.model.exists():
        raise RobustlabError("model file not found", thing=spec.model, fix="fix `model:` in the spec (relative paths are relative to the spec file)")
    if spec.weights is not None and not spec.weights.exists():
        raise RobustlabError("weights file not found", thing=spec.weights, fix="fix `weights:` in the spec")
    fmt = detect_format(spec.model)
    encoder, encoder_how, read_encoder = (None, None, False) if fmt == "python" else _encoder_to_read(spec, trust_model)
    if fmt in _EXTERNAL_LOADERS:
        t0 = time.time()
        info: dict[str, Any] = {}
        model, in_shape, out_shape = _EXTERNAL_LOADERS[fmt](spec, trust_model, info)
        info["load_seconds"] = round(time.time() - t0, 3)
    else:
        model, info = _load_model(spec, trust_model)
        in_shape, out_shape = _model_io_shapes(model, info)
    if encoder is not None and not read_encoder:
        info["label_encoder"] = f"{encoder.name} beside the model not read: the spec sets classes"
    size = _input_size(spec, in_shape, info)
    units, kind = _output_units_and_kind(spec, model, info, size, out_shape)
    classes = _output_classes(spec, units, encoder, encoder_how, read_encoder, info)
    head = _build_logit_head(model, kind)
    logits_from = "pre-activation of the last Dense layer" if head else ("model logits" if kind is OutputKind.LOGITS else "log-probabilities")
    return Detector(spec, model, info, size, kind, classes, units, logits_from, head)
