"""Loading a detector and its spec; preprocessing inside the graph; one score per image.

Every detector, whatever its file format, preprocessing and output layout, is reduced to

* ``Detector.class_logits(x)``: ``x`` float32 ``(N, H, W, 3)`` RGB in ``[0, 1]`` at the detector's
  input size -> float32 ``(N, 2)`` logits ``[negative, positive]`` (differentiable; the model's own
  colour order and scaling are applied inside), and
* ``Detector.scores(x_uint8)``: uint8 ``(N, H, W, 3)`` -> float64 ``(N,)`` ``P(positive)`` in ``[0, 1]``.

The positive class is ``fake`` unless the spec says ``positive: real``. A sample is predicted
positive when ``score >= threshold``.
"""
from __future__ import annotations

import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import yaml

from robustlab.enums import ColorOrder, OutputKind, ResizeMethod, Scale
from robustlab.errors import RobustlabError

log = logging.getLogger("robustlab")

SPEC_KEYS = (
    "name",
    "model",
    "weights",
    "input_size",
    "resize",
    "color",
    "scale",
    "output",
    "classes",
    "positive",
    "threshold",
    "label_encoder",
    "custom_objects",
)
CLASS_NAMES = ("real", "fake")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, on [0, 1] pixels
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SCALE = Scale.UINT8  # what keras.applications models (EfficientNet & co.) expect


@dataclass(frozen=True)
class DetectorSpec:
    """What a detector spec YAML says (CONTRACT section 2). Paths are absolute.

    ``None`` means "not said": inferred from the model when loading (input size, output kind,
    class order).
    """

    model: Path
    name: str = ""
    weights: Path | None = None
    input_size: tuple[int, int] | None = None
    resize: ResizeMethod = ResizeMethod.BILINEAR
    color: ColorOrder = ColorOrder.RGB
    scale: Scale = DEFAULT_SCALE
    output: OutputKind | None = None
    classes: tuple[str, ...] | None = None
    positive: str = "fake"
    threshold: float = 0.5
    label_encoder: Path | None = None
    custom_objects: tuple[tuple[str, str], ...] = ()
    source: Path | None = None  # the YAML file this came from, if any
    said: tuple[str, ...] = field(default=(), compare=False)  # keys given explicitly

    def to_dict(self, *, relative_to: Path | None = None) -> dict[str, Any]:
        """Plain dict in the YAML layout (paths relative to ``relative_to`` when given)."""

        def p(path: Path | None) -> str | None:
            if path is None:
                return None
            if relative_to is not None:
                try:
                    return os.path.relpath(path, relative_to)
                except ValueError:  # other drive (Windows)
                    return str(path)
            return str(path)

        return {
            "name": self.name,
            "model": p(self.model),
            "weights": p(self.weights),
            "input_size": list(self.input_size) if self.input_size else None,
            "resize": str(self.resize),
            "color": str(self.color),
            "scale": str(self.scale),
            "output": str(self.output) if self.output else None,
            "classes": list(self.classes) if self.classes else None,
            "positive": self.positive,
            "threshold": self.threshold,
            "label_encoder": p(self.label_encoder),
            "custom_objects": dict(self.custom_objects) or None,
        }


def _parse_input_size(value: Any, thing: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().replace("x", ",").split(",")
        value = [p.strip() for p in parts if p.strip()]
    if isinstance(value, int):
        value = [value, value]
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise RobustlabError(
            f"input_size {value!r} is not two integers", thing=thing, fix="write it as [H, W], e.g. [128, 128]"
        ) from None
    if h < 8 or w < 8 or h > 4096 or w > 4096:
        raise RobustlabError(f"input_size {h}x{w} is out of range", thing=thing, fix="use 8..4096 pixels per side")
    return (h, w)


def _parse_threshold(value: Any, thing: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise RobustlabError(f"threshold {value!r} is not a number", thing=thing, fix="use a number in [0, 1]") from None
    if not (0.0 <= t <= 1.0) or math.isnan(t):
        raise RobustlabError(f"threshold {t} is outside [0, 1]", thing=thing, fix="use a number in [0, 1]")
    return t


def _parse_classes(value: Any, thing: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if not isinstance(value, (list, tuple)) or not value:
        raise RobustlabError(f"classes {value!r} is not a list", thing=thing, fix="write e.g. classes: [fake, real]")
    names = tuple(str(v).strip().lower() for v in value)
    bad = [n for n in names if n not in CLASS_NAMES]
    if bad or len(set(names)) != len(names) or len(names) > 2:
        raise RobustlabError(
            f"classes {list(value)} must name real and/or fake once each, in output order",
            thing=thing,
            fix="write e.g. classes: [fake, real] for a 2-unit softmax, or [fake] for a 1-unit sigmoid P(fake)",
        )
    return names


def make_spec(values: Mapping[str, Any], *, base_dir: Path | None = None, source: Path | None = None) -> DetectorSpec:
    """Validate a spec mapping (YAML content and/or CLI overrides) into a :class:`DetectorSpec`."""
    thing = str(source) if source else "detector spec"
    unknown = sorted(set(values) - set(SPEC_KEYS))
    if unknown:
        raise RobustlabError(
            f"unknown key(s) {', '.join(unknown)}", thing=thing, fix=f"use only: {', '.join(SPEC_KEYS)}"
        )
    base = base_dir or Path.cwd()

    def path(key: str) -> Path | None:
        v = values.get(key)
        if v in (None, ""):
            return None
        return (base / str(v)).resolve() if not Path(str(v)).is_absolute() else Path(str(v))

    model = path("model")
    if model is None:
        raise RobustlabError("no model given", thing=thing, fix="add `model: path/to/model.keras`")
    positive = str(values.get("positive", "fake")).strip().lower()
    if positive not in CLASS_NAMES:
        raise RobustlabError(f"positive {positive!r} is not real or fake", thing=thing, fix="use positive: fake or positive: real")
    custom = values.get("custom_objects") or {}
    if not isinstance(custom, Mapping):
        raise RobustlabError("custom_objects is not a mapping", thing=thing, fix='write name: "module:attribute" pairs')
    output = values.get("output")
    return DetectorSpec(
        model=model,
        name=str(values.get("name") or model.stem),
        weights=path("weights"),
        input_size=_parse_input_size(values.get("input_size"), thing),
        resize=ResizeMethod.parse(values.get("resize") or "bilinear", what="resize method", thing=thing),
        color=ColorOrder.parse(values.get("color") or "rgb", what="color order", thing=thing),
        scale=Scale.parse(values.get("scale") or DEFAULT_SCALE, what="scale", thing=thing),
        output=None if output in (None, "") else OutputKind.parse(output, what="output kind", thing=thing),
        classes=_parse_classes(values.get("classes"), thing),
        positive=positive,
        threshold=_parse_threshold(values.get("threshold", 0.5), thing),
        label_encoder=path("label_encoder"),
        custom_objects=tuple(sorted((str(k), str(v)) for k, v in custom.items())),
        source=source,
        said=tuple(k for k, v in values.items() if v is not None),
    )


def read_spec(detector: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> DetectorSpec:
    """A spec from a YAML file, or from a bare model path with defaults; ``overrides`` win.

    ``overrides`` holds CLI flags; keys with value ``None`` are ignored.
    """
    path = Path(detector)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not path.exists():
        raise RobustlabError("no such file or folder", thing=path, fix="give a detector spec (.yaml) or a model file")
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise RobustlabError(f"not valid YAML{where}", thing=path, fix="fix the YAML syntax") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RobustlabError(f"cannot read ({exc.__class__.__name__})", thing=path, fix="check the file") from None
        if not isinstance(values, Mapping):
            raise RobustlabError("a detector spec must be a YAML mapping", thing=path, fix="see CONTRACT section 2 / README")
        merged = {**values, **overrides}
        return make_spec(merged, base_dir=path.parent.resolve(), source=path.resolve())
    merged = {"model": str(path.resolve()), **overrides}
    return make_spec(merged, base_dir=Path.cwd())


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
    """``keras`` | ``h5`` | ``savedmodel`` | ``json`` from the path (and its first bytes), or a RobustlabError."""
    from robustlab.safety import HDF5_SIGNATURE, ZIP_SIGNATURE

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
        fix="use a .keras file, a .h5 file, a SavedModel folder or an architecture .json with weights",
    )


def _framework(model: Any) -> Any:
    """The ``keras`` (3) or ``tf_keras`` (2) module a loaded model belongs to."""
    if type(model).__module__.startswith("tf_keras"):
        import tf_keras

        return tf_keras
    import keras

    return keras


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


def _one_line(exc: BaseException, limit: int = 220) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def _load_model(spec: DetectorSpec, trust_model: bool) -> tuple[Any, dict[str, Any]]:
    """Load the model object; returns ``(model, info)``. ``model`` is callable on a float tensor.

    Nothing runs code from the file unless ``trust_model``: the file is scanned first
    (:mod:`robustlab.safety`), Lambda layers are refused or replaced by functions the spec names,
    ``.keras`` loads in safe mode. Keras 3 is tried first, then tf-keras (Keras 2 files); the
    loaded weights are checked against the file, so a half-loaded model is never returned.
    """
    import json
    import time

    from robustlab import safety

    t0 = time.time()
    path = spec.model
    fmt = detect_format(path)
    scanned = safety.scan_model_file(path, fmt)
    custom = _custom_objects(spec, trust_model)
    lambda_names = {la.name for la in scanned.lambdas}
    substitutes = {n: o for n, o in custom.items() if n in lambda_names}
    objects = {n: o for n, o in custom.items() if n not in substitutes}
    notes = safety.check_code(scanned, trusted=trust_model, substitutes=substitutes, custom_names=set(objects))
    weights = spec.weights
    info: dict[str, Any] = {"format": fmt, "path": str(path), "file": scanned.describe(), "code": notes}
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

    def keras_h5(k: Any) -> Any:
        co = {**objects, "Lambda": safety.lambda_guard(k, substitutes, trust_model)}
        return k.models.load_model(str(load_path), custom_objects=co, compile=False, safe_mode=not trust_model)

    def keras_zip(k: Any) -> Any:
        if substitutes:
            cfg, extra = safety.substitute_lambdas(scanned.config or {}, substitutes)
            with _safe_mode_scope(k, not trust_model):
                model = k.models.model_from_json(json.dumps(cfg), custom_objects={**objects, **extra})
            model.load_weights(str(load_path))
            return model
        return k.models.load_model(str(load_path), custom_objects=objects or None, compile=False, safe_mode=not trust_model)

    def arch_json(k: Any) -> Any:
        cfg, extra = safety.substitute_lambdas(scanned.config or {}, substitutes)
        co = {**objects, **extra, "Lambda": safety.lambda_guard(k, substitutes, trust_model)}
        with _safe_mode_scope(k, not trust_model):
            return k.models.model_from_json(json.dumps(cfg), custom_objects=co)

    build = {"h5": keras_h5, "keras": keras_zip, "json": arch_json}.get(fmt)
    if build is None:  # savedmodel: a TensorFlow graph, no Python code from the folder runs
        import keras

        try:
            model = _saved_model_layer(path, keras)
        except RobustlabError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise RobustlabError(f"cannot load SavedModel: {_one_line(exc)}", thing=path, fix="check the folder (saved_model.pb and variables/)") from None
        info["loader"] = f"keras {keras.__version__} TFSMLayer ({model.call_endpoint}; TensorFlow graph, no Python code)"
        info["framework"] = "tensorflow"
        info["load_seconds"] = round(time.time() - t0, 3)
        return model, info

    import keras

    frameworks: list[Any] = [keras]
    try:
        import tf_keras

        frameworks.append(tf_keras)
    except ImportError:  # pragma: no cover - tf-keras is a dependency
        pass
    failures: list[str] = []
    steps: dict[str, float] = {"scan": round(time.time() - t0, 3)}
    for k in frameworks:
        label = f"{'keras' if k is keras else 'tf_keras'} {k.__version__}"
        t = time.time()
        try:
            with warnings.catch_warnings(record=True) as caught:  # kept in info, not printed
                warnings.simplefilter("always")
                model = build(k)
                if weights is not None:
                    model.load_weights(str(weights))
        except RobustlabError:
            raise
        except Exception as exc:  # noqa: BLE001 - try the next loader, report all if none works
            failures.append(f"{label}: {_one_line(exc, 160)}")
            steps[label.split(" ")[0]] = round(time.time() - t, 3)
            continue
        steps[label.split(" ")[0]] = round(time.time() - t, 3)
        t = time.time()
        source = weights if weights is not None else path
        want = safety.file_weight_stats(source, fmt if weights is None else ("keras" if detect_format(weights) == "keras" else "h5"))
        have = safety.model_weight_stats(model)
        if want is not None and not want.matches(have):
            failures.append(f"{label}: loaded weights do not match the file ({have.values:,} values loaded, {want.values:,} in {source.name})")
            continue
        how = {"h5": "load_model (HDF5)", "keras": "load_model (.keras, safe_mode=%s)" % (not trust_model), "json": "model_from_json + load_weights"}[fmt]
        if fmt == "keras" and substitutes:
            how = "model_from_json + load_weights (Lambda replaced)"
        written = f"Keras {scanned.keras_version} file" if scanned.keras_version else "file"
        info["loader"] = f"{label} {how}" + (f" (fallback: keras {keras.__version__} could not read this {written})" if failures else "")
        info["framework"] = "keras" if k is keras else "tf_keras"
        if failures:
            info["loader_fallback"] = failures
        messages = list(dict.fromkeys(" ".join(str(w.message).split())[:200] for w in caught))
        if messages:
            info["loader_warnings"] = messages[:5]
        if want is not None:
            info["weights_check"] = f"{have.arrays} arrays, {have.values:,} values match {source.name}"
        steps["weights_check"] = round(time.time() - t, 3)
        info["load_seconds"] = round(time.time() - t0, 3)
        info["load_steps_seconds"] = steps
        return model, info
    text = "; ".join(failures)
    fix = "check the file; the scan found no code to trust" if not (scanned.lambdas or scanned.custom_classes) else "check the custom_objects in the spec"
    if "marshal" in text.lower():
        fix = "the Lambda layer's bytecode was written by another Python version; replace it in the spec's custom_objects (e.g. RescaleGAP: robustlab.layers:rescale_gap)"
    elif "bytecode" in text.lower() or "lambda" in text.lower():
        fix = f"the model holds Python code; {safety.TRUST_FIX}"
    elif "do not match" in text:
        fix = "the weights file does not belong to this architecture (refusing a half-loaded model)"
    raise RobustlabError(f"cannot load model ({scanned.saved_by}): {text}", thing=path, fix=fix)


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
    from robustlab.safety import read_label_binarizer

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


def _last_dense(model: Any) -> tuple[Any | None, str | None]:
    """The final layer if it is Dense/Activation, with its activation name."""
    layers = getattr(model, "layers", None)
    if not layers:
        return None, None
    last = layers[-1]
    act = getattr(last, "activation", None)
    name = getattr(act, "__name__", None) if act is not None else None
    if name is None and act is not None:
        name = str(act)
    return last, (name.lower() if name else None)


@dataclass
class Detector:
    """A loaded detector: the model, its spec and the differentiable [0,1]-RGB -> logits wrapper."""

    spec: DetectorSpec
    model: Any
    info: dict[str, Any]
    input_size: tuple[int, int]
    output: OutputKind
    classes: tuple[str, ...]
    units: int
    _logit_source: str = "probabilities"
    _head: Callable[[Any, bool], Any] | None = None
    _score_fn: Any = None
    _score_bs: int = 0

    @property
    def positive(self) -> str:
        return self.spec.positive

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    @property
    def name(self) -> str:
        return self.spec.name

    # ---- graph pieces -------------------------------------------------------------
    def preprocess(self, x01: Any) -> Any:
        """float32 (N, H, W, 3) RGB in [0, 1] -> what the model was trained on (tf ops)."""
        import tensorflow as tf

        x = tf.cast(x01, tf.float32)
        scale = self.spec.scale
        if scale is Scale.UINT8:
            x = x * 255.0
        elif scale is Scale.SYMMETRIC:
            x = x * 2.0 - 1.0
        elif scale is Scale.IMAGENET:
            x = (x - tf.constant(IMAGENET_MEAN, tf.float32)) / tf.constant(IMAGENET_STD, tf.float32)
        if self.spec.color is ColorOrder.BGR:
            x = x[..., ::-1]
        return x

    def raw_output(self, x01: Any, training: bool = False) -> Any:
        """The model's own output on preprocessed input, float32 (N, units)."""
        import tensorflow as tf

        out = self.model(self.preprocess(x01), training=training)
        if isinstance(out, Mapping):
            out = next(iter(out.values()))
        out = tf.cast(out, tf.float32)
        return tf.reshape(out, (-1, self.units))

    def class_logits(self, x01: Any, training: bool = False) -> Any:
        """float32 (N, H, W, 3) RGB in [0, 1] -> float32 (N, 2) logits [negative, positive].

        softmax of these logits gives [1 - score, score]. Where the model ends in a Dense layer
        with a sigmoid/softmax activation, the logits are that layer's pre-activation (exact
        gradients even when the probability saturates); otherwise they are log-probabilities.
        """
        import tensorflow as tf

        if self._head is not None:
            z = self._head(self.preprocess(x01), training)
        else:
            z = self.raw_output(x01, training)
        return _to_binary_logits(z, self.output if self._head is None else OutputKind.LOGITS, self.classes, self.positive, tf)

    def positive_probability(self, x01: Any, training: bool = False) -> Any:
        """float32 (N,) P(positive) as a differentiable tensor."""
        import tensorflow as tf

        return tf.nn.softmax(self.class_logits(x01, training), axis=-1)[:, 1]

    # ---- numpy scoring --------------------------------------------------------------
    def scores(self, x_uint8: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB at the input size -> float64 (N,) P(positive) in [0, 1]."""
        import tensorflow as tf

        x = np.asarray(x_uint8)
        if x.ndim != 4 or x.shape[1:] != (*self.input_size, 3):
            raise ValueError(f"expected (N, {self.input_size[0]}, {self.input_size[1]}, 3) images, got {x.shape}")
        if self._score_fn is None:
            h, w = self.input_size

            @tf.function(input_signature=[tf.TensorSpec((None, h, w, 3), tf.uint8)], reduce_retracing=True)
            def score_fn(batch):
                x01 = tf.cast(batch, tf.float32) / 255.0
                return self.positive_probability(x01, False)

            self._score_fn = score_fn
        if x.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got {x.dtype}")
        if len(x) == 0:
            return np.zeros((0,), np.float64)
        return np.asarray(self._score_fn(tf.constant(x)), dtype=np.float64).clip(0.0, 1.0)

    def scores_float(self, x01: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """float32 (N, H, W, 3) in [0, 1] -> float64 (N,) P(positive), batched (no quantization)."""
        import tensorflow as tf

        out = []
        for start in range(0, len(x01), batch_size):
            chunk = tf.constant(np.asarray(x01[start : start + batch_size], np.float32))
            out.append(np.asarray(self.positive_probability(chunk, False), np.float64))
        return np.concatenate(out) if out else np.zeros((0,), np.float64)

    def describe(self) -> dict[str, Any]:
        """What run.json records about the detector: spec, loader and what was inferred."""
        return {
            "name": self.spec.name,
            "spec": self.spec.to_dict(),
            "spec_file": str(self.spec.source) if self.spec.source else None,
            "input_size": list(self.input_size),
            "output": str(self.output),
            "classes": list(self.classes),
            "units": self.units,
            "positive": self.positive,
            "threshold": self.threshold,
            "logits_from": self._logit_source,
            **{k: v for k, v in self.info.items() if k not in ("path",)},
        }


def _to_binary_logits(z: Any, kind: OutputKind, classes: tuple[str, ...], positive: str, tf: Any) -> Any:
    """(N, units) model output -> (N, 2) logits [negative, positive]."""
    eps = 1e-7
    units = z.shape[-1]
    if units == 1:
        if kind is OutputKind.SIGMOID:
            p = tf.clip_by_value(z[:, 0], eps, 1 - eps)
            logit = tf.math.log(p) - tf.math.log1p(-p)
        else:  # logits (or softmax on 1 unit, which is meaningless and rejected earlier)
            logit = z[:, 0]
        if classes[0] != positive:
            logit = -logit
        return tf.stack([tf.zeros_like(logit), logit], axis=1)
    pos = classes.index(positive)
    neg = 1 - pos
    if kind is OutputKind.SIGMOID:  # two independent sigmoids: use each as a logit
        p = tf.clip_by_value(z, eps, 1 - eps)
        z = tf.math.log(p) - tf.math.log1p(-p)
    elif kind is OutputKind.SOFTMAX:
        z = tf.math.log(tf.clip_by_value(z, eps, 1.0))
    return tf.stack([z[:, neg], z[:, pos]], axis=1)


def _infer_output_kind(model: Any, probe: np.ndarray | None) -> tuple[OutputKind, str]:
    _, act = _last_dense(model)
    if act in ("sigmoid",):
        return OutputKind.SIGMOID, "inferred from the last layer's sigmoid activation"
    if act in ("softmax",):
        return OutputKind.SOFTMAX, "inferred from the last layer's softmax activation"
    if act in ("linear",):
        return OutputKind.LOGITS, "inferred from the last layer's linear activation"
    if probe is not None:
        in_unit = bool(np.all((probe >= 0) & (probe <= 1)))
        if not in_unit:
            return OutputKind.LOGITS, "inferred from a probe: outputs outside [0, 1]"
        if probe.shape[-1] == 2 and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3):
            return OutputKind.SOFTMAX, "inferred from a probe: outputs in [0, 1] summing to 1"
        return OutputKind.SIGMOID, "inferred from a probe: outputs in [0, 1]"
    return OutputKind.SIGMOID, "assumed (could not be inferred)"


def _build_logit_head(model: Any, kind: OutputKind) -> Callable[[Any, bool], Any] | None:
    """Pre-activation of a final Dense(sigmoid|softmax) layer, or None when not available."""
    if kind is OutputKind.LOGITS:
        return None
    last, act = _last_dense(model)
    if last is None or act not in ("sigmoid", "softmax"):
        return None
    try:
        keras = _framework(model)  # keras 3, or tf_keras for a Keras 2 file

        if isinstance(last, keras.layers.Dense):
            feature = keras.Model(model.inputs, last.input)
            kernel, bias = last.kernel, last.bias

            def head(x: Any, training: bool) -> Any:
                import tensorflow as tf

                h = feature(x, training=training)
                z = tf.matmul(tf.cast(h, tf.float32), tf.cast(kernel, tf.float32))
                if bias is not None:
                    z = z + tf.cast(bias, tf.float32)
                return z

            return head
        if isinstance(last, keras.layers.Activation):
            feature = keras.Model(model.inputs, last.input)
            return lambda x, training: feature(x, training=training)
    except Exception:  # noqa: BLE001 - fall back to log-probabilities
        return None
    return None


def load_detector(detector: "str | os.PathLike | DetectorSpec", *, trust_model: bool = False, **overrides: Any) -> Detector:
    """Load a detector from a spec YAML, a bare model path, or a :class:`DetectorSpec`.

    ``overrides`` are spec keys (``input_size``, ``scale``, ``color``, ``output``, ``classes``,
    ``positive``, ``threshold``, ``resize``, ``weights``, ``name``); ``None`` values are ignored.
    """
    from robustlab._tf import import_tf

    import_tf()
    if isinstance(detector, DetectorSpec):
        spec = detector
        if overrides:
            merged = {**{k: v for k, v in spec.to_dict().items() if v is not None}, **{k: v for k, v in overrides.items() if v is not None}}
            spec = make_spec(merged, base_dir=Path.cwd(), source=spec.source)
    else:
        spec = read_spec(detector, overrides)
    if not spec.model.exists():
        raise RobustlabError("model file not found", thing=spec.model, fix="fix `model:` in the spec (relative paths are relative to the spec file)")
    if spec.weights is not None and not spec.weights.exists():
        raise RobustlabError("weights file not found", thing=spec.weights, fix="fix `weights:` in the spec")
    encoder, encoder_how = label_encoder_path(spec)
    if encoder is not None and not encoder.is_file():
        raise RobustlabError("label encoder file not found", thing=encoder, fix="fix `label_encoder:` in the spec (relative paths are relative to the spec file)")
    read_encoder = encoder is not None and (encoder_how == "spec" or spec.classes is None)
    if read_encoder and not trust_model:
        from robustlab.safety import scan_pickle

        held = ", ".join(scan_pickle(encoder)[:2]) or "no classes"
        raise RobustlabError(
            f"is a pickled label encoder ({held}) that sets the class order; unpickling needs trust",
            thing=encoder,
            fix="pass --trust-model to read it (robustlab reads only LabelBinarizer data from it), or set classes: in the spec",
        )
    model, info = _load_model(spec, trust_model)
    if encoder is not None and not read_encoder:
        info["label_encoder"] = f"{encoder.name} beside the model not read: the spec sets classes"
    thing = str(spec.model)
    in_shape, out_shape = _model_io_shapes(model, info)
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
        size = (int(in_shape[1]), int(in_shape[2]))
        info["input_size_from"] = "model input shape"
    else:
        info["input_size_from"] = "spec"
        if in_shape[1] is not None and (in_shape[1], in_shape[2]) != size:
            raise RobustlabError(
                f"input_size {size[0]}x{size[1]} does not match the model's fixed input {in_shape[1]}x{in_shape[2]}",
                thing=spec.source or thing,
                fix="remove input_size from the spec or correct it",
            )

    probe = None
    if out_shape is None or spec.output is None:
        import tensorflow as tf

        det_tmp = Detector(spec, model, info, size, OutputKind.LOGITS, ("fake",), 1)
        x = tf.constant(np.random.default_rng(0).random((2, *size, 3), np.float32))
        out = model(det_tmp.preprocess(x), training=False)
        if isinstance(out, Mapping):
            out = next(iter(out.values()))
        probe = np.asarray(out, np.float64).reshape(2, -1)
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
        info["output_from"] = how
    else:
        kind = spec.output
        info["output_from"] = "spec"
    if kind is OutputKind.SOFTMAX and units == 1:
        raise RobustlabError("output: softmax with 1 unit", thing=spec.source or thing, fix="use output: sigmoid (or logits) for a 1-unit model")
    classes = spec.classes
    if read_encoder:
        assert encoder is not None
        from_encoder, how = classes_from_label_encoder(encoder, units)
        info["label_encoder"] = f"{encoder} ({encoder_how})"
        if classes is not None and tuple(classes) != from_encoder:
            raise RobustlabError(
                f"classes {list(classes)} in the spec disagree with the label encoder ({how})",
                thing=spec.source or thing,
                fix="remove classes: or label_encoder: from the spec",
            )
        classes = from_encoder
        info["classes_from"] = how
    elif classes is None:
        classes = ("fake",) if units == 1 else ("real", "fake")
        info["classes_from"] = "default: 1 unit = P(fake); 2 units = [real, fake]"
    else:
        info["classes_from"] = "spec"
        if units == 2 and len(classes) != 2:
            raise RobustlabError(f"classes {list(classes)} name {len(classes)} class(es) for a 2-unit output", thing=spec.source or thing, fix="list both, in output order, e.g. [fake, real]")
        if units == 1 and len(classes) != 1:
            raise RobustlabError(f"classes {list(classes)} name 2 classes for a 1-unit output", thing=spec.source or thing, fix="list the class the unit's probability is for, e.g. [fake] or [real]")
    head = _build_logit_head(model, kind)
    det = Detector(spec, model, info, size, kind, tuple(classes), units, "pre-activation of the last Dense layer" if head else ("model logits" if kind is OutputKind.LOGITS else "log-probabilities"), head)
    return det
