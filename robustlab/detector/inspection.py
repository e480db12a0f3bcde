"""What a detector file is and how robustlab would run it; is the configured preprocessing right?

* :func:`inspect_detector`: format, loader, inputs, outputs, the spec robustlab would use and what
  was inferred, what code the file holds, and (with labelled data) a preprocessing check. Works on
  files that cannot be loaded too: the static part (read without running anything) is reported with
  the reason.
* :func:`preprocessing_check`: scores a stratified sample under every plausible preprocessing
  (RGB/BGR x 0-255 / 0-1 / -1-1 / ImageNet), then under every resize backend (Pillow, OpenCV,
  TensorFlow: robustlab.preprocess), and says when the configured one is not the best. A mismatch
  costs detectors like the seeds' tens of points of accuracy.
* :func:`skew_report`: the same sample through the training pipeline (the detector's spec) and a
  serving pipeline (another spec, say the app's): per-image score differences, decision flips and
  the accuracy under each.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from robustlab.enums import ColorOrder, ResizeMethod, Scale
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


@dataclass(frozen=True)
class ResizeScore:
    """Accuracy and AUC of the sample resized by one backend (colour and scale as configured);
    ``max_pixel_diff``: the largest difference (0-255 levels) from the configured backend's pixels."""

    resize: str
    accuracy: float
    auc: float | None
    configured: bool
    max_pixel_diff: int


# the backends the check tries, by library name (the old names are Pillow's and counted as such)
RESIZE_CANDIDATES = tuple(m for m in ResizeMethod if m.library != "pil" or m.value.startswith("pil-"))
PIL_ALIASES = {
    ResizeMethod.NEAREST: ResizeMethod.PIL_NEAREST,
    ResizeMethod.BILINEAR: ResizeMethod.PIL_BILINEAR,
    ResizeMethod.BICUBIC: ResizeMethod.PIL_BICUBIC,
    ResizeMethod.AREA: ResizeMethod.PIL_BOX,
}


@dataclass
class PreprocessingCheck:
    """The result of :func:`preprocessing_check`: one row per preprocessing, best first, then one
    per resize backend, best first (empty, with a note, when no image of the sample needs resizing)."""

    n: int
    counts: dict[str, int]
    threshold: float
    rows: list[PreprocessingScore]
    warnings: list[str] = field(default_factory=list)
    resize_rows: list[ResizeScore] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
            "resize_rows": [dataclasses.asdict(r) for r in self.resize_rows],
            "best_resize": self.resize_rows[0].resize if self.resize_rows else None,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


def preprocessing_check(detector: Any, data: Any, *, sample: int = 200, seed: int = 0, batch_size: int = 32) -> PreprocessingCheck:
    """Score a stratified, seeded sample of ``data`` under each colour order x scale.

    ``detector``: a loaded :class:`~robustlab.detector.model.Detector`; ``data``: a labelled
    :class:`~robustlab.data.Dataset`. Accuracy is at the detector's threshold; AUC does not depend on
    it. Rows are sorted best first (accuracy, then AUC, the configured one winning ties).
    """
    from robustlab.metrics import binary_scores

    idx, y_all = _sample(detector, data, sample, seed)
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
    check.resize_rows, check.notes = _resize_rows(detector, data, batch, y, batch_size)
    check.warnings = _warnings(check, detector)
    return check


def _sample(detector: Any, data: Any, sample: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted indices of a stratified, seeded sample of ``data``, all labels with the detector's positive as 1)."""
    from robustlab.sampling import stratified_subset

    if sample < 2:
        raise RobustlabError(f"--sample {sample} is too small", fix="use at least 2 images (default 200)")
    y_all = data.labels_for(detector.positive)
    fraction = min(1.0, sample / max(1, len(data)))
    idx = np.sort(stratified_subset(y_all, fraction, seed)) if fraction < 1.0 else np.arange(len(data))
    return idx, y_all


def _resize_rows(detector: Any, data: Any, batch: Any, y: np.ndarray, batch_size: int) -> tuple[list[ResizeScore], list[str]]:
    """The sample (``batch``: the images the configured pipeline read) resized by every backend,
    scored with the configured colour order and scale; best first."""
    from robustlab.metrics import binary_scores
    from robustlab.preprocess import require_libraries

    pre = detector.spec.preprocessing
    configured = PIL_ALIASES.get(pre.resize, pre.resize)
    notes: list[str] = []
    arrays: dict[ResizeMethod, np.ndarray] = {}
    for method in RESIZE_CANDIDATES:
        variant = dataclasses.replace(pre, resize=method)
        try:
            require_libraries(variant)
        except RobustlabError:
            notes.append(f"resize {method} not tried: OpenCV is not installed (pip install 'robustlab[cv2]')")
            continue
        got = data.load_arrays(detector.input_size, method=variant, indices=batch.idx, batch_size=batch_size)
        if not np.array_equal(got.idx, batch.idx):  # another decoder would not differ: same rules, same files
            raise RobustlabError(f"resize {method}: the sample's files changed while they were read", thing=data.root, fix="run inspect again when the files no longer change")
        arrays[method] = got.x
    base = arrays.get(configured, batch.x)
    if all(np.array_equal(x, base) for x in arrays.values()):
        notes.append("every resize backend gives the same pixels on this sample (no image needs resizing): the resize check cannot tell them apart")
        return [], notes
    rows = []
    for method, x in arrays.items():
        s = detector.scores_float(x.astype(np.float32) / np.float32(255.0), batch_size)
        m = binary_scores(y, s, threshold=detector.threshold)
        diff = int(np.abs(x.astype(np.int16) - base.astype(np.int16)).max())
        rows.append(ResizeScore(str(method), float(m["accuracy"]), m["auc"], method is configured, diff))
    rows.sort(key=lambda r: (-r.accuracy, -(r.auc if r.auc is not None else 0.0), not r.configured))
    return rows, notes


@dataclass
class SkewReport:
    """The result of :func:`skew_report`: one sample through the training and the serving pipeline.

    ``images`` holds one dict per image (``path``, ``label`` 0/1 with the detector's positive as 1,
    ``training`` and ``serving`` scores, ``diff`` = serving - training, ``flipped``), largest
    ``|diff|`` first; ``max_pixel_diff`` compares the two pipelines' input images (0-255 levels).
    """

    n: int
    counts: dict[str, int]
    training: dict[str, Any]
    serving: dict[str, Any]
    training_accuracy: float
    serving_accuracy: float
    training_auc: float | None
    serving_auc: float | None
    flips: int
    max_abs_diff: float
    mean_abs_diff: float
    max_pixel_diff: int
    images: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _pipeline(detector: Any) -> dict[str, Any]:
    """What a detector's pipeline is, for a skew report: name, the preprocessing rules and libraries, colour, scale, threshold."""
    return {"name": detector.name, "spec_file": str(detector.spec.source) if detector.spec.source else None, **detector.spec.preprocessing.describe(),
            "color": str(detector.spec.color), "scale": str(detector.spec.scale), "threshold": detector.threshold}


def skew_report(detector: Any, serving: Any, data: Any, *, sample: int = 200, seed: int = 0, batch_size: int = 32) -> SkewReport:
    """Score a stratified, seeded sample of ``data`` through ``detector`` (its spec: the training
    pipeline) and ``serving`` (a Detector with another spec, say the app's; often the same model).

    Both must take the same input size and call the same class positive. An image that one
    pipeline cannot decode is left out of both. Accuracy is at each pipeline's own threshold.
    """
    from robustlab.metrics import binary_scores

    if tuple(serving.input_size) != tuple(detector.input_size) or serving.positive != detector.positive:
        raise RobustlabError(
            f"the serving pipeline takes {serving.input_size[0]}x{serving.input_size[1]} images with positive: {serving.positive}, "
            f"the detector {detector.input_size[0]}x{detector.input_size[1]} with positive: {detector.positive}",
            thing=serving.spec.source,
            fix="a skew report compares two pipelines into the same model input: give the serving spec the same input_size and positive",
        )
    idx, y_all = _sample(detector, data, sample, seed)
    train = data.load_arrays(detector.input_size, method=detector.spec.preprocessing, indices=idx, batch_size=batch_size)
    serve = data.load_arrays(serving.input_size, method=serving.spec.preprocessing, indices=idx, batch_size=batch_size)
    both = np.intersect1d(train.idx, serve.idx)
    if len(both) == 0:
        raise RobustlabError("no image of the sample could be read by both pipelines", thing=data.root, fix="check the files and the two specs' decode:")
    xt = train.x[np.isin(train.idx, both)]
    xs = serve.x[np.isin(serve.idx, both)]
    y = y_all[both].astype(np.int64)
    st = detector.scores_float(xt.astype(np.float32) / np.float32(255.0), batch_size)
    ss = serving.scores_float(xs.astype(np.float32) / np.float32(255.0), batch_size)
    mt = binary_scores(y, st, threshold=detector.threshold)
    ms = binary_scores(y, ss, threshold=serving.threshold)
    pt, ps = st >= detector.threshold, ss >= serving.threshold
    diff = ss.astype(np.float64) - st.astype(np.float64)
    images = [
        {"path": data.paths[i], "label": int(y[k]), "training": float(st[k]), "serving": float(ss[k]), "diff": float(diff[k]), "flipped": bool(pt[k] != ps[k])}
        for k, i in enumerate(both.tolist())
    ]
    images.sort(key=lambda r: (-abs(r["diff"]), r["path"]))
    n_fake = int(data.labels[both].sum())
    return SkewReport(
        n=len(both),
        counts={"real": len(both) - n_fake, "fake": n_fake},
        training=_pipeline(detector),
        serving=_pipeline(serving),
        training_accuracy=float(mt["accuracy"]),
        serving_accuracy=float(ms["accuracy"]),
        training_auc=mt["auc"],
        serving_auc=ms["auc"],
        flips=int((pt != ps).sum()),
        max_abs_diff=float(np.abs(diff).max()),
        mean_abs_diff=float(np.abs(diff).mean()),
        max_pixel_diff=int(np.abs(xt.astype(np.int16) - xs.astype(np.int16)).max()),
        images=images,
    )


def serving_detector(detector: Any, serving: "str | os.PathLike", *, trust_model: bool = False) -> Any:
    """The Detector for a serving spec: ``detector``'s own model under the serving spec when both
    name the same files and the serving spec does not change what the model is (input size, output,
    classes); otherwise loaded from the serving spec."""
    from robustlab.detector.loading import load_detector
    from robustlab.detector.spec import read_spec

    spec = read_spec(serving)
    base = detector.spec
    same_model = (spec.model, spec.weights, spec.custom_objects, spec.label_encoder) == (base.model, base.weights, base.custom_objects, base.label_encoder)
    same_io = spec.input_size in (None, tuple(detector.input_size)) and spec.output in (None, detector.output) and spec.classes in (None, tuple(detector.classes))
    if same_model and same_io:
        return dataclasses.replace(detector, spec=spec, _score_fn=None)
    return load_detector(spec, trust_model=trust_model)


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
    if check.resize_rows:
        best_r = check.resize_rows[0]
        conf_r = next((r for r in check.resize_rows if r.configured), None)
        if conf_r is not None and best_r is not conf_r and best_r.accuracy - conf_r.accuracy > margin - 1e-12:
            out.append(
                f"the configured resize ({conf_r.resize}) is not the best on this sample: {pct(conf_r.accuracy)} vs "
                f"{pct(best_r.accuracy)} with {best_r.resize}; check resize: in the spec against the training pipeline (--resize {best_r.resize})"
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
    skew: "str | os.PathLike | None" = None,
) -> dict[str, Any]:
    """A report (plain dict, JSON-ready) on ``detector``; see the module docstring.

    ``skew``: a serving pipeline's spec; with ``data``, the report gets a ``skew`` section
    (:func:`skew_report`) comparing it with the detector's own (training) pipeline.

    The report has ``loaded`` False and ``error`` (one line) when the model cannot be loaded (say,
    a Lambda layer without ``trust_model``); what could be read without running anything is there.
    Bad DATA raises RobustlabError.
    """
    from robustlab.detector.loading import detect_format, label_encoder_path, load_detector
    from robustlab.detector.pickles import scan_pickle
    from robustlab.detector.safety import scan_model_file
    from robustlab.detector.spec import read_spec

    overrides = dict(overrides or {})
    report: dict[str, Any] = {"detector": str(detector), "loaded": False}
    if skew is not None and data is None:
        raise RobustlabError("--skew needs DATA: the skew is measured on labelled images", thing=skew, fix="robustlab inspect DETECTOR DATA --skew SERVING.yaml")
    spec = read_spec(detector, overrides)
    if skew is not None:
        read_spec(skew)  # a bad serving spec fails in one line before any model is loaded
    report["spec_file"] = str(spec.source) if spec.source else None
    report["model"] = str(spec.model)
    try:
        if spec.scorer is None and not spec.model.exists():
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
        if skew is not None:
            serving = serving_detector(det, skew, trust_model=trust_model)
            skewed = skew_report(det, serving, dataset, sample=sample, seed=seed, batch_size=batch_size)
            report["skew"] = {"data": report["preprocessing_check"]["data"], **skewed.to_dict()}
    return report


def _flow(value: Any) -> str:
    """A spec value as YAML flow text: [fake, real], {RescaleGAP: robustlab.layers:rescale_gap}, "0-1"."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return f'"{text}"' if text[:1] in "-0123456789" and not text.replace(".", "").isdigit() else text


def _format_check(check: Mapping[str, Any]) -> list[str]:
    """The preprocessing check's lines: colour x scale, then the resize backends, notes, warnings."""
    c = check["counts"]
    lines = [f"preprocessing check on {check['n']} images of {check['data']} ({c['real']} real, {c['fake']} fake), threshold {check['threshold']:g}:"]
    lines.append(f"  {'color':<6}{'scale':<10}{'accuracy':>9}{'AUC':>8}")
    for r in check["rows"]:
        auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
        tag = "  <- configured" if r["configured"] else ""
        lines.append(f"  {r['color']:<6}{r['scale']:<10}{pct(r['accuracy']):>9}{auc:>8}{tag}")
    if check.get("resize_rows"):
        lines.append(f"  {'resize':<16}{'accuracy':>9}{'AUC':>8}{'max pixel diff':>16}")
        for r in check["resize_rows"]:
            auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
            tag = "  <- configured" if r["configured"] else ""
            lines.append(f"  {r['resize']:<16}{pct(r['accuracy']):>9}{auc:>8}{r['max_pixel_diff']:>16}{tag}")
    lines.extend(f"note: {note}" for note in check.get("notes", []))
    lines.extend(f"warning: {w}" for w in check["warnings"])
    return lines


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
        kind = {"h5": "HDF5 model", "keras": "Keras .keras archive", "json": "architecture JSON", "savedmodel": "TensorFlow SavedModel", "onnx": "ONNX model", "python": "Python function"}[f["format"]]
        row("file", f"{f['path']}  ({kind}, {human}, saved by {f['saved_by']})")
        parts = [f"{f['layers']} layers"] if f.get("layers") else []
        if f.get("nested_models"):
            parts.append("nested models: " + ", ".join(f["nested_models"]))
        row("contents", "; ".join(parts) or ("(Python code)" if f["format"] == "python" else "(a TensorFlow graph)"))
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
        lines.extend(_format_check(check))
    skew = report.get("skew")
    if skew:
        lines.extend(format_skew(skew))
    return "\n".join(lines) + "\n"


def _pipeline_text(p: Mapping[str, Any]) -> str:
    return f"{p['name']}: decode {p['decode']} (alpha {p['alpha']}, 16-bit {p['bit16']}, EXIF {p['exif']}), resize {p['resize']}, {p['color']}, scale {p['scale']}, threshold {p['threshold']:g} [{p['libraries']}]"


def format_skew(skew: Mapping[str, Any], top: int = 10) -> list[str]:
    """The human lines of a skew report (:class:`SkewReport` as a dict)."""
    c = skew["counts"]
    auc = {k: "n/a" if skew[f"{k}_auc"] is None else f"{skew[f'{k}_auc']:.3f}" for k in ("training", "serving")}
    lines = [
        f"train/serve skew on {skew['n']} images of {skew['data']} ({c['real']} real, {c['fake']} fake):",
        f"  training  {_pipeline_text(skew['training'])}",
        f"  serving   {_pipeline_text(skew['serving'])}",
        f"  accuracy  {pct(skew['training_accuracy'])} training, {pct(skew['serving_accuracy'])} serving (AUC {auc['training']} / {auc['serving']})",
        f"  decisions {skew['flips']} of {skew['n']} flip; score difference max {skew['max_abs_diff']:.4g}, mean {skew['mean_abs_diff']:.4g}; input pixels differ by up to {skew['max_pixel_diff']} levels",
    ]
    shown = [r for r in skew["images"][:top] if r["diff"] != 0.0]
    if shown:
        lines.append(f"  {'image':<40}{'label':>6}{'training':>10}{'serving':>10}{'diff':>9}")
        for r in shown:
            lines.append(f"  {r['path'][-40:]:<40}{r['label']:>6}{r['training']:>10.4f}{r['serving']:>10.4f}{r['diff']:>+9.4f}" + ("  flipped" if r["flipped"] else ""))
    return lines


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
