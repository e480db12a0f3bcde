"""A detector spec: how a model was trained (input size, resize, colour order, scale, output, classes, threshold), read from YAML or a bare model path.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from robustlab.enums import ColorOrder, OutputKind, ResizeMethod, Scale
from robustlab.errors import RobustlabError
from robustlab.yamlfile import guard_yaml

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
            raise RobustlabError("a detector spec must be a YAML mapping", thing=path, fix="see CONTRACT section 2 / README")
        merged = {**values, **overrides}
        return make_spec(merged, base_dir=path.parent.resolve(), source=path.resolve())
    merged = {"model": str(path.resolve()), **overrides}
    return make_spec(merged, base_dir=Path.cwd())
