"""A finished run folder read back: rows, predictions, plots and run.json, checked.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.errors import RobustlabError

ROW_KEYS = ("set", "variant", "param", "n", "accuracy", "misclassified", "threshold")


# --------------------------------------------------------------------------- reading a run back


@dataclass
class RunData:
    """A run folder read back: run.json, rows, predictions, plots and example images."""

    path: Path
    info: dict[str, Any]
    rows: list[dict[str, Any]]
    reference_rows: list[dict[str, Any]] = field(default_factory=list)
    predictions: Any = None  # pandas.DataFrame with PREDICTION_FIELDS, or None when not loaded
    plots: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes
    examples: dict[str, Any] | None = None  # examples/index.json
    shown_as: Path | None = None  # the path to show, when the files are read from elsewhere (a run being written)

    @property
    def display_path(self) -> Path:
        return self.shown_as or self.path

    @property
    def threshold(self) -> float:
        return float(self.info.get("threshold", self.rows[0]["threshold"] if self.rows else 0.5))

    def _label_names(self) -> tuple[str, str]:
        pos = (self.info.get("detector") or {}).get("positive", "fake")
        return ("real" if pos == "fake" else "fake", pos)

    def confusions(self) -> list[tuple[tuple[str, str, str], tuple[int, int, int, int]]]:
        """``[((set, variant, param), (tn, fp, fn, tp))]`` per scored set, clean first."""
        df = self.predictions
        if df is None or not len(df):
            return []
        out = []
        import pandas as pd

        codes, uniques = pd.MultiIndex.from_arrays([df["set"], df["variant"], df["param"]]).factorize()
        y = df["label"].to_numpy(np.int64)
        p = df["pred"].to_numpy(np.int64)
        cell = np.bincount(codes * 4 + y * 2 + p, minlength=4 * len(uniques)).reshape(len(uniques), 4)
        for k, key in enumerate(uniques):
            tn, fp, fn, tp = (int(v) for v in cell[k])
            s, v, prm = (str(x) for x in key)
            out.append(((s, v, prm), (tn, fp, fn, tp)))
        out.sort(key=lambda item: item[0][0] != "clean")
        return out

    def misclassified_clean(self, limit: int) -> list[tuple[str, str, float]]:
        """``[(path, true label name, score)]`` wrong on clean images, most confident first."""
        df = self.predictions
        if df is None or not len(df):
            return []
        c = df[(df["set"] == "clean") & (df["label"] != df["pred"])]
        if not len(c):
            return []
        conf = (c["score"] - self.threshold).abs()
        c = c.assign(_conf=conf).sort_values(["_conf", "id"], ascending=[False, True], kind="stable").head(limit)
        names = self._label_names()
        return [(str(r.path), names[int(r.label)], float(r.score)) for r in c.itertuples()]

    def flipped(self, limit: int) -> list[tuple[str, str, str, float, float]]:
        """``[(path, true label name, variant, clean score, score)]``: right clean, wrong under a variant."""
        df = self.predictions
        if df is None or not len(df):
            return []
        clean = df[df["set"] == "clean"][["id", "score", "pred", "label"]].rename(columns={"score": "clean_score", "pred": "clean_pred"})
        other = df[df["set"] != "clean"]
        if not len(other) or not len(clean):
            return []
        m = other.merge(clean[["id", "clean_score", "clean_pred"]], on="id", how="inner")
        m = m[(m["clean_pred"] == m["label"]) & (m["pred"] != m["label"])]
        if not len(m):
            return []
        m = m.assign(_chg=(m["score"] - m["clean_score"]).abs()).sort_values(["_chg", "id"], ascending=[False, True], kind="stable").head(limit)
        from robustlab.reporting.tables import param_display

        names = self._label_names()
        return [(str(r.path), names[int(r.label)], f"{r.variant} {param_display(r.param)}".strip(), float(r.clean_score), float(r.score)) for r in m.itertuples()]

    def example_png(self, file: str) -> bytes | None:
        """An example image's PNG bytes (scaled down for the page when large), None if missing."""
        from robustlab.reporting.html import THUMB_MAX

        p = self.path / "examples" / Path(file).name
        try:
            data = p.read_bytes()
        except OSError:
            return None
        import io

        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                if max(im.size) <= THUMB_MAX:
                    return data
                im = im.convert("RGB")
                im.thumbnail((THUMB_MAX, THUMB_MAX), Image.Resampling.LANCZOS)
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                return buf.getvalue()
        except OSError:
            return None


def _interrupted_hint(folder: Path) -> str:
    if not folder.parent.is_dir():
        return ""
    leftovers = sorted(p.name for p in folder.parent.glob(f".{folder.name}.tmp-*") if p.is_dir())
    return f" (only {leftovers[0]}, left by a run that is still going or was interrupted)" if leftovers else ""


def read_rows(folder: Path, info: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """``(run.json, rows, reference_rows)``; with ``info`` given, run.json is not read (a run being written)."""
    from robustlab.runs import read_run

    if info is None:
        if not folder.is_dir():
            raise RobustlabError(f"no such run folder{_interrupted_hint(folder)}", thing=folder, fix="give the --out folder of a finished robustlab run")
        got = read_run(folder)
        info = got["run"]
    path = folder / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RobustlabError(f"unreadable metrics.json ({exc.__class__.__name__})", thing=path, fix="re-run the evaluation") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("rows"), list):
        got = f"a JSON {type(metrics).__name__}" if not isinstance(metrics, dict) else "an object without a rows list"
        raise RobustlabError(f"metrics.json is {got}, not {{\"rows\": [...]}}", thing=path, fix="re-run the evaluation with this robustlab")
    refs_raw = metrics.get("reference_rows") or []
    if not isinstance(refs_raw, list):
        raise RobustlabError("metrics.json reference_rows is not a list", thing=path, fix="re-run the evaluation with this robustlab")
    rows = [check_row(r, i, path) for i, r in enumerate(metrics["rows"])]
    refs = [check_row(r, i, path, what="reference row") for i, r in enumerate(refs_raw)]
    if not rows:
        raise RobustlabError("metrics.json has no rows", thing=path, fix="re-run the evaluation")
    if not isinstance(info, dict):
        raise RobustlabError("run.json is not a JSON object", thing=folder / "run.json", fix="re-run the evaluation")
    return info, rows, refs


def check_row(row: Any, i: int, path: Path, *, what: str = "row") -> dict[str, Any]:
    """A metrics.json row, type-checked: ``set`` / ``variant`` strings, ``param`` a string (null
    read as empty), ``n`` / ``misclassified`` non-negative integers, metrics numbers or null.
    RobustlabError (exit 2) naming the file, the row and the key otherwise."""
    fix = "re-run the evaluation with this robustlab (metrics.json is written by it)"
    if not isinstance(row, dict):
        raise RobustlabError(f"metrics.json {what} {i} is a JSON {type(row).__name__}, not an object", thing=path, fix=fix)
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        raise RobustlabError(f"metrics.json {what} {i} lacks {', '.join(missing)}", thing=path, fix=fix)
    for key in ("set", "variant"):
        if not isinstance(row[key], str) or not row[key]:
            raise RobustlabError(f"metrics.json {what} {i} has {key}: {json.dumps(row[key])}, not a name", thing=path, fix=fix)
    if row["param"] is None:
        row["param"] = ""
    if not isinstance(row["param"], str):
        raise RobustlabError(f"metrics.json {what} {i} has param: {json.dumps(row['param'])}, not a string", thing=path, fix=fix)
    for key in ("n", "misclassified"):
        v = row[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise RobustlabError(f"metrics.json {what} {i} has {key}: {json.dumps(v)}, not a count", thing=path, fix=fix)
    for key, v in row.items():
        if key in ("accuracy", "precision", "recall", "f1", "auc", "ap", "threshold") and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise RobustlabError(f"metrics.json {what} {i} has {key}: {json.dumps(v)}, not a number", thing=path, fix=fix)
    return row


def read_predictions(folder: Path) -> Any:
    """``predictions.csv`` as a DataFrame (id, path, label, set, variant, param, score, pred)."""
    import pandas as pd

    from robustlab.reporting.tables import PREDICTION_FIELDS

    path = folder / "predictions.csv"
    try:
        df = pd.read_csv(
            path,
            dtype={"path": str, "set": str, "variant": str, "param": str},
            keep_default_na=False,
            na_values=[],
            encoding="utf-8",
        )
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RobustlabError(f"unreadable predictions.csv ({exc.__class__.__name__})", thing=path, fix="re-run the evaluation") from None
    missing = [c for c in PREDICTION_FIELDS if c not in df.columns]
    if missing:
        raise RobustlabError(f"predictions.csv lacks columns {', '.join(missing)}", thing=path, fix="re-run the evaluation with this robustlab")
    try:
        df["id"] = df["id"].astype(np.int64)
        df["label"] = df["label"].astype(np.int64)
        df["pred"] = df["pred"].astype(np.int64)
        df["score"] = df["score"].astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise RobustlabError(f"predictions.csv has a non-numeric id/label/score/pred ({exc})", thing=path, fix="re-run the evaluation") from None
    if len(df) and (not df["label"].isin([0, 1]).all() or not df["pred"].isin([0, 1]).all()):
        raise RobustlabError("predictions.csv has labels or predictions other than 0/1", thing=path, fix="re-run the evaluation")
    return df


def _read_plots(folder: Path) -> dict[str, bytes]:
    plots_dir = folder / "plots"
    if not plots_dir.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(plots_dir.glob("*.png"))}


def _rebuild_plots(run: RunData) -> None:
    """Draw the standard plots a run folder lacks (from rows and predictions) into ``run.plots``."""
    from robustlab.metrics import confusion
    from robustlab.reporting.plots import ScoreSet, plot_accuracy_vs_param, plot_confusion, plot_score_sets

    want_curves = not ({"roc.png", "pr.png"} <= set(run.plots))
    want_conf = "confusion_clean.png" not in run.plots
    kinds = {r["set"] for r in run.rows}
    want_acc = ("adversarial" in kinds and "accuracy_vs_eps.png" not in run.plots) or ("corrupted" in kinds and "accuracy_vs_severity.png" not in run.plots)
    df = run.predictions
    if not (want_curves or want_conf or want_acc):
        return
    with tempfile.TemporaryDirectory(prefix="robustlab-plots-") as tmp:
        t = Path(tmp)
        if df is not None and len(df) and (want_curves or want_conf):
            groups = []
            for (s, v, p), g in df.groupby(["set", "variant", "param"], sort=False):
                if s != "mixed":
                    groups.append((s, v, p, g))
            groups.sort(key=lambda item: item[0] != "clean")
            sets = [ScoreSet(s, v, p, g["label"].to_numpy(), g["score"].to_numpy()) for s, v, p, g in groups]
            neg, pos = run._label_names()
            if want_curves and sets:
                plot_score_sets(sets, t, threshold=run.threshold, labels=(neg, pos), clean_ece=next((r.get("ece") for r in run.rows if r["set"] == "clean"), None))
            clean = df[df["set"] == "clean"]
            if want_conf and len(clean):
                m = confusion(clean["label"].to_numpy(), clean["pred"].to_numpy())
                plot_confusion(m, t / "confusion_clean.png", title=f"clean (threshold {run.threshold:g})", labels=(neg, pos))
        if want_acc:
            plot_accuracy_vs_param(run.rows, t)
        for p in sorted(t.glob("*.png")):
            run.plots.setdefault(p.name, p.read_bytes())


def load_run_data(run: "str | os.PathLike", *, info: dict[str, Any] | None = None, predictions: bool = True, plots: bool = True) -> RunData:
    """Read a run folder for reporting; :class:`RobustlabError` (exit 2) when incomplete or unreadable.

    ``info``: the run.json contents, for a run folder still being written (then completeness is not
    checked). Plots the folder lacks are drawn from its rows and predictions.
    """
    folder = Path(run)
    info, rows, refs = read_rows(folder, info)
    data = RunData(folder.resolve(), info, rows, refs)
    if predictions:
        data.predictions = read_predictions(folder)
    if plots:
        data.plots = _read_plots(folder)
        _rebuild_plots(data)
    idx = folder / "examples" / "index.json"
    if idx.is_file():
        try:
            data.examples = json.loads(idx.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data.examples = None
    return data
