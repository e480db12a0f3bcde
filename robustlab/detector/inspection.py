"""What a detector file is and how robustlab would run it; is the configured preprocessing right?

* :func:`inspect_detector`: format, loader, inputs, outputs, the spec robustlab would use and what
  was inferred, what code the file holds, and (with labelled data) a preprocessing check. Works on
  files that cannot be loaded too: the static part (read without running anything) is reported with
  the reason.
* :func:`preprocessing_check`: scores a stratified sample under every plausible preprocessing
  (RGB/BGR x 0-255 / 0-1 / -1-1 / ImageNet) and says when the configured one is not the best.
  A mismatch costs detectors like the seeds' tens of points of accuracy.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from robustlab.enums import ColorOrder, Scale
from robustlab.errors import RobustlabError

MARGIN = 0.02  # accuracy difference (fraction) below which two preprocessings count as equal


@dataclass(frozen=True)
class PreprocessingScore:
    """Accuracy and AUC of the sample under one preprocessing."""

    color: str
    scale: str
    accuracy: float
    auc: float | None
    configured: bool


@dataclass
class PreprocessingCheck:
    """The result of :func:`preprocessing_check`: one row per preprocessing, best first."""

    n: int
    counts: dict[str, int]
    threshold: float
    rows: list[PreprocessingScore]
    warnings: list[str] = field(default_factory=list)

    @property
    def configured(self) -> PreprocessingScore:
        return next(r for r in self.rows if r.configured)

    @property
    def best(self) -> PreprocessingScore:
        return self.rows[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "counts": dict(self.counts),
            "threshold": self.threshold,
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "best": f"{self.best.color} {self.best.scale}",
            "configured": f"{self.configured.color} {self.configured.scale}",
            "warnings": list(self.warnings),
        }


def preprocessing_check(detector: Any, data: Any, *, sample: int = 200, seed: int = 0, batch_size: int = 32) -> PreprocessingCheck:
    """Score a stratified, seeded sample of ``data`` under each colour order x scale.

    ``detector``: a loaded :class:`~robustlab.detector.model.Detector`; ``data``: a labelled
    :class:`~robustlab.data.Dataset`. Accuracy is at the detector's threshold; AUC does not depend on
    it. Rows are sorted best first (accuracy, then AUC, the configured one winning ties).
    """
    from robustlab.metrics import binary_scores
    from robustlab.sampling import stratified_subset

    if sample < 2:
        raise RobustlabError(f"--sample {sample} is too small", fix="use at least 2 images (default 200)")
    y_all = data.labels if detector.positive == "fake" else 1 - data.labels
    fraction = min(1.0, sample / max(1, len(data)))
    idx = np.sort(stratified_subset(np.asarray(y_all), fraction, seed)) if fraction < 1.0 else np.arange(len(data))
    batch = data.load_arrays(detector.input_size, method=detector.spec.preprocessing, indices=idx, batch_size=batch_size)
    if len(batch.idx) == 0:
        raise RobustlabError("no image of the sample could be read", thing=data.root, fix="check the files")
    y = np.asarray(y_all)[batch.idx].astype(np.int64)
    x01 = batch.x.astype(np.float32) / np.float32(255.0)
    rows: list[PreprocessingScore] = []
    for color in ColorOrder:
        for scale in Scale:
            configured = color is detector.spec.color and scale is detector.spec.scale
            variant = detector if configured else dataclasses.replace(detector, spec=dataclasses.replace(detector.spec, color=color, scale=scale), _score_fn=None)
            s = variant.scores_float(x01, batch_size)
            m = binary_scores(y, s, threshold=detector.threshold)
            rows.append(PreprocessingScore(str(color), str(scale), float(m["accuracy"]), m["auc"], configured))
    rows.sort(key=lambda r: (-r.accuracy, -(r.auc if r.auc is not None else 0.0), not r.configured))
    n_fake = int(data.labels[batch.idx].sum())
    check = PreprocessingCheck(len(batch.idx), {"real": len(batch.idx) - n_fake, "fake": n_fake}, detector.threshold, rows)
    check.warnings = _warnings(check, detector)
    return check


def _warnings(check: PreprocessingCheck, detector: Any) -> list[str]:
    conf, best = check.configured, check.best
    out: list[str] = []
    margin = max(MARGIN, 1.0 / check.n)
    if best is not conf and best.accuracy - conf.accuracy > margin - 1e-12:
        out.append(
            f"the configured preprocessing ({conf.color}, {conf.scale}) is not the best on this sample: "
            f"{pct(conf.accuracy)} vs {pct(best.accuracy)} with {best.color}, {best.scale}; "
            f"check color: and scale: in the spec (--color {best.color} --scale {best.scale})"
        )
    if conf.accuracy < 0.5 - margin and conf.auc is not None and conf.auc < 0.5 - MARGIN:
        flipped = list(reversed(detector.classes)) if len(detector.classes) == 2 else ["real" if detector.classes[0] == "fake" else "fake"]
        out.append(
            f"accuracy {pct(conf.accuracy)} and AUC {conf.auc:.3f} are below chance: the output's class order looks reversed; "
            f"try classes: {flipped} (now {list(detector.classes)})"
        )
    spread = check.rows[0].accuracy - check.rows[-1].accuracy
    if spread <= margin:
        out.append("every preprocessing scores the same on this sample: it cannot tell them apart (an untrained or constant model, or too few images)")
    return out


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


# --------------------------------------------------------------------------- inspect


def _shape(t: Any) -> list[int | None]:
    shape = getattr(t, "shape", None)
    return [None if d is None else int(d) for d in shape] if shape is not None else []


def _io(det: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    model = det.model
    inputs = getattr(model, "inputs", None)
    if inputs:
        x = inputs[0]
        inp = {"shape": _shape(x), "dtype": str(getattr(getattr(x, "dtype", None), "name", getattr(x, "dtype", "")))}
        out_t = model.outputs[0]
        out = {"shape": _shape(out_t)}
    else:  # TFSMLayer
        inp = {"shape": [None, *det.input_size, 3], "dtype": "float32", "note": "from the serving signature"}
        out = {"shape": [None, det.units]}
    layers = getattr(model, "layers", None)
    if layers:
        last = layers[-1]
        act = getattr(getattr(last, "activation", None), "__name__", None)
        out["last_layer"] = f"{type(last).__name__} {last.name!r}" + (f" ({act})" if act else "")
        out["layers"] = len(layers)
    if hasattr(model, "count_params"):
        try:
            out["parameters"] = int(model.count_params())
        except Exception:  # noqa: BLE001 - unbuilt sub-models
            pass
    out.update({"kind": str(det.output), "units": det.units, "classes": list(det.classes)})
    return inp, out


def _describe_loaded(det: Any, report: dict[str, Any]) -> None:
    """Add what loading ``det`` (a Detector) found to ``report``: loader, inputs/outputs, the
    effective spec and where each inferred value came from."""
    info = det.info
    report["loaded"] = True
    report["loader"] = info.get("loader")
    report["framework"] = info.get("framework")
    for key in ("loader_fallback", "loader_warnings", "weights_check", "weights", "load_seconds", "load_steps_seconds", "code"):
        if info.get(key) not in (None, []):
            report[key] = info[key]
    if "label_encoder" in report and "label_encoder" in info:
        report["label_encoder"]["used"] = info["label_encoder"]
    report["inputs"], report["outputs"] = _io(det)
    effective = det.spec.to_dict()
    effective.update({"input_size": list(det.input_size), "output": str(det.output), "classes": list(det.classes)})
    report["spec"] = effective
    report["inferred"] = {
        "input_size": info.get("input_size_from"),
        "output": info.get("output_from"),
        "classes": info.get("classes_from"),
        "logits": det._logit_source,
        "color/scale": "spec" if {"color", "scale"} & set(det.spec.said) else f"default ({det.spec.color}, {det.spec.scale}): check them with DATA",
    }


def inspect_detector(
    detector: "str | os.PathLike",
    data: "str | os.PathLike | None" = None,
    *,
    trust_model: bool = False,
    split: str | None = None,
    classes: str | None = None,
    sample: int = 200,
    seed: int = 0,
    batch_size: int = 32,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A report (plain dict, JSON-ready) on ``detector``; see the module docstring.

    The report has ``loaded`` False and ``error`` (one line) when the model cannot be loaded (say,
    a Lambda layer without ``trust_model``); what could be read without running anything is there.
    Bad DATA raises RobustlabError.
    """
    from robustlab.detector.loading import (
        detect_format,
        label_encoder_path,
        load_detector,
    )
    from robustlab.detector.safety import scan_model_file, scan_pickle
    from robustlab.detector.spec import read_spec

    overrides = dict(overrides or {})
    report: dict[str, Any] = {"detector": str(detector), "loaded": False}
    spec = read_spec(detector, overrides)
    report["spec_file"] = str(spec.source) if spec.source else None
    report["model"] = str(spec.model)
    try:
        if not spec.model.exists():
            raise RobustlabError("model file not found", thing=spec.model, fix="fix `model:` in the spec (relative paths are relative to the spec file)")
        fmt = detect_format(spec.model)
        report["file"] = {"path": str(spec.model), **scan_model_file(spec.model, fmt).describe()}
    except RobustlabError as exc:
        report["error"] = exc.one_line()
        return report
    encoder, how = label_encoder_path(spec)
    if encoder is not None and encoder.is_file():
        enc: dict[str, Any] = {"path": str(encoder), "found": how}
        try:
            enc["pickle_references"] = scan_pickle(encoder)
        except RobustlabError as exc:
            enc["error"] = exc.one_line()
        report["label_encoder"] = enc
    dataset = None
    if data is not None:
        from robustlab.data import open_dataset

        dataset = open_dataset(data, split=split, classes=classes)
    try:
        det = load_detector(detector, trust_model=trust_model, **overrides)
    except RobustlabError as exc:
        report["error"] = exc.one_line()
        return report
    _describe_loaded(det, report)
    if dataset is not None:
        check = preprocessing_check(det, dataset, sample=sample, seed=seed, batch_size=batch_size)
        report["preprocessing_check"] = {"data": str(data) + (f" (split {split})" if split else ""), **check.to_dict()}
    return report


def _flow(value: Any) -> str:
    """A spec value as YAML flow text: [fake, real], {RescaleGAP: robustlab.layers:rescale_gap}, "0-1"."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return f'"{text}"' if text[:1] in "-0123456789" and not text.replace(".", "").isdigit() else text


def format_report(report: Mapping[str, Any]) -> str:
    """The human text of an :func:`inspect_detector` report."""
    lines: list[str] = []

    def row(key: str, value: Any) -> None:
        lines.append(f"{key:<14}{value}")

    row("detector", report["detector"] + (f"  (spec {report['spec_file']})" if report.get("spec_file") and report["spec_file"] != report["detector"] else ""))
    f = report.get("file")
    if f:
        size = f["size_bytes"]
        human = f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
        kind = {"h5": "HDF5 model", "keras": "Keras .keras archive", "json": "architecture JSON", "savedmodel": "TensorFlow SavedModel"}[f["format"]]
        row("file", f"{f['path']}  ({kind}, {human}, saved by {f['saved_by']})")
        parts = [f"{f['layers']} layers"] if f.get("layers") else []
        if f.get("nested_models"):
            parts.append("nested models: " + ", ".join(f["nested_models"]))
        row("contents", "; ".join(parts) or "(a TensorFlow graph)")
        for la in f.get("lambda_layers", []):
            row("", f"Lambda layer {la['name']}: {la['function']}" + (" (Python bytecode)" if la["bytecode"] else ""))
        for c in f.get("custom_classes", []):
            row("", f"custom class {c}")
        if f.get("tf_op_layers"):
            row("", f"{len(f['tf_op_layers'])} TensorFlow-op layers (no Python code): " + ", ".join(f["tf_op_layers"][:4]))
        for c in f.get("other_code", []):
            row("", f"Python bytecode in {c}")
    enc = report.get("label_encoder")
    if enc:
        refs = ", ".join(enc.get("pickle_references", [])[:4])
        row("label encoder", f"{enc['path']} ({enc['found']}): pickle referencing {refs or 'nothing'}" + (f"; {enc['error']}" if enc.get("error") else ""))
    if not report.get("loaded"):
        row("loaded", f"no: {report.get('error', 'unknown reason')}")
        return "\n".join(lines) + "\n"
    row("loader", report["loader"])
    for fb in report.get("loader_fallback", []):
        row("", f"tried first: {fb}")
    for w in report.get("loader_warnings", []):
        row("", f"loader warning: {w}")
    if report.get("weights_check"):
        row("weights", f"verified: {report['weights_check']}")
    if report.get("load_seconds") is not None:
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in (report.get("load_steps_seconds") or {}).items())
        row("load time", f"{report['load_seconds']:.1f} s" + (f" ({steps})" if steps else ""))
    for note in report.get("code", []):
        row("code", note)
    inp, out = report["inputs"], report["outputs"]
    spec = report["spec"]
    row("input", f"{inp['shape']} {inp.get('dtype', '')} -> images at {spec['input_size'][0]}x{spec['input_size'][1]}, resize {spec['resize']}, {spec['color']}, scale {spec['scale']}")
    last = f", last layer {out['last_layer']}" if out.get("last_layer") else ""
    params = f", {out['parameters']:,} parameters" if out.get("parameters") else ""
    row("output", f"{out['shape']} {out['kind']} = P({', '.join(out['classes'])}){last}{params}")
    lines.append("spec (what robustlab uses; save it as YAML to pin it):")
    for k, v in spec.items():
        if v is not None:
            lines.append(f"  {k}: {_flow(v)}")
    lines.append("inferred:")
    for k, v in report["inferred"].items():
        lines.append(f"  {k}: {v}")
    check = report.get("preprocessing_check")
    if check:
        c = check["counts"]
        lines.append(f"preprocessing check on {check['n']} images of {check['data']} ({c['real']} real, {c['fake']} fake), threshold {check['threshold']:g}:")
        lines.append(f"  {'color':<6}{'scale':<10}{'accuracy':>9}{'AUC':>8}")
        for r in check["rows"]:
            auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
            tag = "  <- configured" if r["configured"] else ""
            lines.append(f"  {r['color']:<6}{r['scale']:<10}{pct(r['accuracy']):>9}{auc:>8}{tag}")
        for w in check["warnings"]:
            lines.append(f"warning: {w}")
    return "\n".join(lines) + "\n"


def report_path_safe(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report with paths as strings (for JSON output)."""
    def clean(o: Any) -> Any:
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, Mapping):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return clean(report)
