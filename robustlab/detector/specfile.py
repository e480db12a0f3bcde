"""Writing a detector spec file back: a picked threshold, keeping the rest of the file as the user wrote it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from robustlab.errors import RobustlabError
from robustlab.evaluation.thresholds import ThresholdChoice

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.detector.spec import DetectorSpec

# --------------------------------------------------------------------------- writing specs

_THRESHOLD_LINE = re.compile(r"^threshold[ \t]*:[^\n]*$", re.MULTILINE)


def spec_target(detector: "str | os.PathLike") -> Path:
    """Where ``--write`` stores a threshold: the spec YAML itself, or, for a bare model path,
    ``<model stem>.yaml`` beside the model (a SavedModel folder ``m/`` -> ``m.yaml``)."""
    p = Path(detector)
    if p.suffix.lower() in (".yaml", ".yml") and not p.is_dir():
        return p
    return p.parent / f"{p.stem if p.is_file() else p.name}.yaml"


def _yaml_float(t: float) -> str:
    return repr(float(t))  # shortest text that reads back as the same float64


def write_threshold(
    detector: "str | os.PathLike | DetectorSpec",
    threshold: "float | ThresholdChoice | None",
    *,
    out: "str | os.PathLike | None" = None,
    force: bool = False,
    overrides: Mapping[str, Any] | None = None,
    comment: str | None = None,
    dry_run: bool = False,
) -> Path:
    """Store ``threshold`` in a detector spec YAML; returns the file written (atomically).

    * ``detector`` a spec YAML, no ``out``: its ``threshold:`` line is replaced (or added); the
      rest of the file, comments included, is kept. A different threshold already there is only
      replaced with ``force``. Refused when ``overrides`` change the spec (the stored threshold
      would not belong to what the file says): write a new file with ``out``.
    * ``detector`` a bare model path (or a :class:`DetectorSpec` without a source file): a new
      spec ``<model stem>.yaml`` beside the model (or ``out``) with the spec, the overrides and
      the threshold.
    * ``out``: a new spec file; an existing file is only replaced with ``force``.

    The model file is never touched. ``comment`` goes on the threshold line (one line).
    ``dry_run``: make every check, write nothing, return the target (``threshold`` may then be
    ``None``: "not known yet", checked as if it differed from one already there).
    """
    from robustlab.detector.spec import spec_with_overrides

    if threshold is None and not dry_run:
        raise ValueError("threshold is None")
    t = math.nan if threshold is None else float(threshold.threshold if isinstance(threshold, ThresholdChoice) else threshold)
    if threshold is not None and (not (0.0 <= t <= 1.0) or math.isnan(t)):
        raise ValueError(f"threshold {t} is outside [0, 1]")
    full = spec_with_overrides(detector, {k: v for k, v in (overrides or {}).items() if k != "threshold"})
    note = f"  # {' '.join(comment.split())}" if comment else ""
    if out is None and full.source is not None:
        return _write_into_spec(Path(full.source), full, t, note, force=force, dry_run=dry_run)
    target = Path(out) if out is not None else spec_target(full.model)
    return _write_new_spec(target, full, t, note, force=force, dry_run=dry_run)


def _write_into_spec(source: Path, full: "DetectorSpec", t: float, note: str, *, force: bool, dry_run: bool) -> Path:
    """Replace (or add) the ``threshold:`` line of the spec file ``source``, keeping the rest.

    ``full`` is the spec the threshold was picked with; refused when it differs from the file's,
    or when the file already says another threshold (unless ``force``). ``t`` NaN: not known yet.
    """
    from robustlab.detector.spec import read_spec
    from robustlab.runs import atomic_write_text

    base = read_spec(source)
    if dataclasses.replace(base, threshold=0.0) != dataclasses.replace(full, threshold=0.0, source=base.source):
        changed = [k for k in ("model", "weights", "input_size", "resize", "color", "scale", "output", "classes", "positive", "name") if getattr(base, k) != getattr(full, k)]
        raise RobustlabError(
            f"the threshold was picked with settings the spec does not have ({', '.join(changed) or 'overrides'})",
            thing=source,
            fix="write a new spec that records them with --write-to NEW.yaml",
        )
    said = "threshold" in base.said
    if said and base.threshold != t and not force:
        raise RobustlabError(
            f"already says threshold: {base.threshold:g}",
            thing=source,
            fix="pass --force to replace it" + ("" if math.isnan(t) else f" with {t:.6g}") + ", or --write-to NEW.yaml for a new spec",
        )
    if dry_run:
        return source
    text = source.read_text(encoding="utf-8")
    new_text = _edit_threshold_line(text, t, note, base, said)
    if new_text is None:  # unusual layout (flow style, anchors...): rewrite the mapping
        import yaml

        values = yaml.safe_load(text)
        values["threshold"] = t
        new_text = yaml.safe_dump(values, sort_keys=False, default_flow_style=False)
    atomic_write_text(source, new_text)
    return source


def _edit_threshold_line(text: str, t: float, note: str, base: "DetectorSpec", said: bool) -> str | None:
    """``text`` with its one ``threshold:`` line replaced (or one added), or None when the edited
    text would not read back as ``base`` with threshold ``t`` (then the caller rewrites the mapping)."""
    line = f"threshold: {_yaml_float(t)}{note}"
    matches = _THRESHOLD_LINE.findall(text)
    if len(matches) == 1:
        new_text = _THRESHOLD_LINE.sub(lambda m: line, text)
    elif not matches and not said:
        new_text = text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
    else:
        return None
    assert base.source is not None
    try:
        check = read_spec_text(new_text, base.source)
    except RobustlabError:
        return None
    if check.threshold != t or dataclasses.replace(check, threshold=0.0) != dataclasses.replace(base, threshold=0.0):
        return None
    return new_text


def _write_new_spec(target: Path, full: "DetectorSpec", t: float, note: str, *, force: bool, dry_run: bool) -> Path:
    """A new spec file ``target`` recording ``full`` and the threshold ``t`` (paths relative to it)."""
    import yaml

    from robustlab.runs import atomic_write_text

    if target.exists() and not force:
        raise RobustlabError("already exists", thing=target, fix="pass --force to replace it, or choose another file with --write-to")
    if target.resolve() in (full.model.resolve(), *(p.resolve() for p in (full.weights, full.label_encoder) if p is not None)):
        raise RobustlabError("is the model (or its weights), which is never overwritten", thing=target, fix="choose a .yaml file name with --write-to")
    if dry_run:
        return target
    values = {k: v for k, v in full.to_dict(relative_to=target.parent.resolve()).items() if v is not None and k != "threshold"}
    body = "".join(f"{k}: {yaml.safe_dump(v, default_flow_style=True)}" if isinstance(v, list) else yaml.safe_dump({k: v}, default_flow_style=False) for k, v in values.items())
    header = "# detector spec written by robustlab threshold (see the README, section Detectors)\n"
    atomic_write_text(target, header + body + f"threshold: {_yaml_float(t)}{note}\n")
    return target


def read_spec_text(text: str, source: "str | os.PathLike") -> "DetectorSpec":
    """Parse spec YAML ``text`` as if it were the file ``source`` (paths relative to its folder)."""
    import yaml

    from robustlab.detector.spec import make_spec

    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError:
        raise RobustlabError("not valid YAML", thing=source, fix="fix the YAML syntax") from None
    if not isinstance(values, Mapping):
        raise RobustlabError("a detector spec must be a YAML mapping", thing=source)
    src = Path(source).resolve()
    return make_spec(values, base_dir=src.parent, source=src)
