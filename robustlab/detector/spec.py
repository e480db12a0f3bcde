"""A detector spec: how a model was trained (input size, decoding and resize, colour order, scale, output, classes, threshold), read from YAML or a bare model path.
"""
from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from robustlab.enums import AlphaRule, Bit16Rule, ColorOrder, Decoder, ExifRule, OutputKind, ResizeMethod, Scale
from robustlab.errors import RobustlabError
from robustlab.preprocess import Preprocessing, make_preprocessing
from robustlab.yamlfile import guard_yaml

SPEC_KEYS = (
    "name",
    "model",
    "weights",
    "input_size",
    "resize",
    "decode",
    "alpha",
    "bit16",
    "exif",
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
SCORER_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")  # model: "module:function"


@dataclass(frozen=True)
class DetectorSpec:
    """What a detector spec YAML says (docs/contract.md, "The detector spec"). Paths are absolute.

    ``None`` means "not said": inferred from the model when loading (input size, output kind,
    class order).
    """

    model: Path
    name: str = ""
    weights: Path | None = None
    input_size: tuple[int, int] | None = None
    resize: ResizeMethod = ResizeMethod.BILINEAR
    decode: Decoder = Decoder.PIL
    alpha: AlphaRule = AlphaRule.WHITE
    bit16: Bit16Rule = Bit16Rule.SCALE
    exif: ExifRule = ExifRule.APPLY
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

    @property
    def scorer(self) -> str | None:
        """``"module:function"`` when ``model:`` names a trusted Python scorer, else None."""
        text = str(self.model)
        return text if not self.model.is_absolute() and SCORER_REF.match(text) else None

    @property
    def preprocessing(self) -> Preprocessing:
        """How a file becomes this detector's input image: decoder, alpha / 16-bit / EXIF rules, resize."""
        return Preprocessing(self.resize, self.decode, self.alpha, self.bit16, self.exif)

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
            "model": self.scorer or p(self.model),
            "weights": p(self.weights),
            "input_size": list(self.input_size) if self.input_size else None,
            "resize": str(self.resize),
            "decode": str(self.decode),
            "alpha": str(self.alpha),
            "bit16": str(self.bit16),
            "exif": str(self.exif),
            "color": str(self.color),
            "scale": str(self.scale),
            "output": str(self.output) if self.output else None,
            "classes": list(self.classes) if self.classes else None,
            "positive": self.positive,
            "threshold": self.threshold,
            "label_encoder": p(self.label_encoder),
            "custom_objects": dict(self.custom_objects) or None,
        }


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any, key: str, thing: str, fix: str) -> float:
    """A finite float from an int, a float or a numeric string; booleans (YAML ``yes``/``no``,
    ``true``/``false``) and NaN/inf are refused, whatever YAML made of them."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
        raise RobustlabError(f"{key} {_shown(value)} is not a number", thing=thing, fix=fix)
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise RobustlabError(f"{key} {_shown(value)} is not a number", thing=thing, fix=fix) from None
    if not math.isfinite(number):
        raise RobustlabError(f"{key} {_shown(value)} is not a finite number", thing=thing, fix=fix)
    return number


def _whole(value: Any, key: str, thing: str, fix: str) -> int:
    """An integer from an int, an integral float or a digit string (booleans refused)."""
    number = _number(value.strip() if isinstance(value, str) else value, key, thing, fix)
    if number != int(number):
        raise RobustlabError(f"{key} {_shown(value)} is not a whole number", thing=thing, fix=fix)
    return int(number)


def _parse_input_size(value: Any, thing: str) -> tuple[int, int] | None:
    """``[H, W]``, ``"HxW"``, ``"H,W"`` or one int for both sides; each 8..4096, integers only."""
    if value is None:
        return None
    fix = "write it as [H, W], e.g. [128, 128]"
    if isinstance(value, str):
        parts = value.lower().replace("x", ",").split(",")
        value = [p.strip() for p in parts if p.strip()]
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RobustlabError(f"input_size {_shown(value)} is not two integers", thing=thing, fix=fix)
    h, w = (_whole(v, "input_size", thing, fix) for v in value)
    if h < 8 or w < 8 or h > 4096 or w > 4096:
        raise RobustlabError(f"input_size {h}x{w} is out of range", thing=thing, fix="use 8..4096 pixels per side")
    return (h, w)


def _parse_threshold(value: Any, thing: str) -> float:
    """A finite number in [0, 1] (not a boolean)."""
    t = _number(value, "threshold", thing, "use a number in [0, 1], e.g. threshold: 0.5")
    if not 0.0 <= t <= 1.0:
        raise RobustlabError(f"threshold {t} is outside [0, 1]", thing=thing, fix="use a number in [0, 1]")
    return t


def _text(value: Any, key: str, thing: str) -> str:
    """A string value (numbers are written as text); lists, mappings and booleans are refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, os.PathLike)):
        raise RobustlabError(f"{key} {_shown(value)} is not text", thing=thing, fix=f"write {key}: as a plain string")
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if "\0" in text:
        raise RobustlabError(f"{key} holds a NUL character", thing=thing, fix=f"write {key}: as a plain string")
    return text


def _parse_classes(value: Any, thing: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if not isinstance(value, (list, tuple)) or not value:
        raise RobustlabError(f"classes {_shown(value)} is not a list", thing=thing, fix="write e.g. classes: [fake, real]")
    names = tuple(str(v).strip().lower() for v in value)
    bad = [n for n in names if n not in CLASS_NAMES]
    if bad or len(set(names)) != len(names) or len(names) > 2:
        raise RobustlabError(
            f"classes {_shown(list(value))} must name real and/or fake once each, in output order",
            thing=thing,
            fix="write e.g. classes: [fake, real] for a 2-unit softmax, or [fake] for a 1-unit sigmoid P(fake)",
        )
    return names


def _word(values: Mapping[str, Any], key: str, thing: str) -> str | None:
    """The text of a vocabulary key (``resize``, ``color``, ``scale``, ``output``), None when not
    said; a boolean or a list is refused, not read as the default."""
    value = values.get(key)
    if value is None or value == "":
        return None
    return _shown(value) if isinstance(value, bool) else _text(value, key, thing)


def make_spec(values: Mapping[str, Any], *, base_dir: Path | None = None, source: Path | None = None) -> DetectorSpec:
    """Validate a spec mapping (YAML content and/or CLI overrides) into a :class:`DetectorSpec`."""
    thing = str(source) if source else "detector spec"
    unknown = sorted({str(k) for k in values} - set(SPEC_KEYS))
    if unknown:
        raise RobustlabError(
            f"unknown key(s) {', '.join(_shown(k, 40) for k in unknown)}", thing=thing, fix=f"use only: {', '.join(SPEC_KEYS)}"
        )
    values = {str(k): v for k, v in values.items()}
    base = base_dir or Path.cwd()

    def path(key: str) -> Path | None:
        v = values.get(key)
        if v in (None, ""):
            return None
        v = _text(v, key, thing)
        return (base / v).resolve() if not Path(v).is_absolute() else Path(v)

    raw_model = values.get("model")
    if isinstance(raw_model, str) and SCORER_REF.match(raw_model.strip()) and not (base / raw_model.strip()).exists():
        model: Path | None = Path(raw_model.strip())  # a Python scorer "module:function", not a path
    else:
        model = path("model")
    if model is None:
        raise RobustlabError("no model given", thing=thing, fix="add `model: path/to/model.keras`")
    positive = _text(values.get("positive", "fake"), "positive", thing).strip().lower()
    if positive not in CLASS_NAMES:
        raise RobustlabError(f"positive {_shown(positive)} is not real or fake", thing=thing, fix="use positive: fake or positive: real")
    custom = values.get("custom_objects") or {}
    if not isinstance(custom, Mapping):
        raise RobustlabError("custom_objects is not a mapping", thing=thing, fix='write name: "module:attribute" pairs')
    custom_objects = tuple(sorted((_text(k, "custom_objects name", thing), _text(v, f"custom_objects {k}", thing)) for k, v in custom.items()))
    output = values.get("output")
    name = values.get("name")
    pre = make_preprocessing(*(_word(values, k, thing) for k in ("resize", "decode", "alpha", "bit16", "exif")), thing=thing)
    return DetectorSpec(
        model=model,
        name=_text(name, "name", thing) if name not in (None, "") else model.stem,
        weights=path("weights"),
        input_size=_parse_input_size(values.get("input_size"), thing),
        resize=pre.resize,
        decode=pre.decode,
        alpha=pre.alpha,
        bit16=pre.bit16,
        exif=pre.exif,
        color=ColorOrder.parse(_word(values, "color", thing) or "rgb", what="color order", thing=thing),
        scale=Scale.parse(_word(values, "scale", thing) or DEFAULT_SCALE, what="scale", thing=thing),
        output=None if output in (None, "") else OutputKind.parse(_word(values, "output", thing), what="output kind", thing=thing),
        classes=_parse_classes(values.get("classes"), thing),
        positive=positive,
        threshold=_parse_threshold(values.get("threshold", 0.5), thing),
        label_encoder=path("label_encoder"),
        custom_objects=custom_objects,
        source=source,
        said=tuple(k for k, v in values.items() if v is not None),
    )


def read_spec(detector: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> DetectorSpec:
    """A spec from a YAML file, or from a bare model path with defaults; ``overrides`` win.

    ``overrides`` holds CLI flags; keys with value ``None`` are ignored.
    """
    path = Path(detector)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not path.exists() and SCORER_REF.match(str(detector)):  # a bare "module:function" scorer
        return make_spec({"model": str(detector), **overrides}, base_dir=Path.cwd())
    if not path.exists():
        raise RobustlabError("no such file or folder", thing=path, fix="give a detector spec (.yaml) or a model file")
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        guard_yaml(path, what="detector spec")  # size and alias-bomb limits (robustlab.yamlfile)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise RobustlabError(f"not valid YAML{where}", thing=path, fix="fix the YAML syntax") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RobustlabError(f"cannot read ({exc.__class__.__name__})", thing=path, fix="check the file") from None
        if not isinstance(values, Mapping):
            raise RobustlabError("a detector spec must be a YAML mapping", thing=path, fix="see docs/contract.md (The detector spec) or the README's Detectors section")
        merged = {**values, **overrides}
        return make_spec(merged, base_dir=path.parent.resolve(), source=path.resolve())
    merged = {"model": str(path.resolve()), **overrides}
    return make_spec(merged, base_dir=Path.cwd())


def spec_with_overrides(detector: "str | os.PathLike | DetectorSpec", overrides: Mapping[str, Any] | None = None) -> DetectorSpec:
    """A spec from a YAML file, a bare model path or a :class:`DetectorSpec`, with ``overrides``
    (spec keys; ``None`` values ignored) validated on top."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not isinstance(detector, DetectorSpec):
        return read_spec(detector, overrides)
    if not overrides:
        return detector
    merged = {**{k: v for k, v in detector.to_dict().items() if v is not None}, **overrides}
    return make_spec(merged, base_dir=Path.cwd(), source=detector.source)
