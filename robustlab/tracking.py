"""Optional experiment tracking: a finished run folder logged to MLflow, adv-train history to
TensorBoard. The run folder stays the source of truth; these are copies for dashboards.

MLflow (``pip install 'robustlab[mlflow]'``)::

    from robustlab.tracking import log_run
    run_id = log_run("runs/nightly", "./mlruns")

logs run.json's settings as parameters, every row's numbers as metrics and the whole run folder as
artifacts (under ``run/``). A metric is named ``ROW.METRIC`` with the row named as in policies
(``clean``, ``worst-case``, ``fgsm[eps=8/255]``, ``mixed[fgsm,eps=8/255]``), then made fit for
MLflow's key alphabet (letters, digits, ``_ - . : /`` and space) by :func:`metric_key`, always the
same way: ``[`` and ``,`` become ``:``, ``]`` is dropped, ``=`` becomes ``_`` and any other
character ``_``; so ``fgsm[eps=8/255].f1`` is ``fgsm:eps_8/255.f1`` and
``pgd[eps=8/255,steps=10].accuracy`` is ``pgd:eps_8/255:steps_10.accuracy``. Intervals
(``accuracy_ci: [lo, hi]``) become ``.lo`` / ``.hi`` metrics. A local path or ``file:`` URI is
MLflow's file store, which MLflow 3 only opens with ``MLFLOW_ALLOW_FILE_STORE=true``: robustlab sets
it for its own process when the URI is local (a database or server URI is used as given).

TensorBoard: :class:`TensorBoardHistory` is an ``on_epoch_end`` hook for
:func:`robustlab.training.run.adv_train` writing each history row's numbers as scalars at
``step = epoch`` with ``tf.summary.write`` and the scalars plugin's metadata (what
``tf.summary.scalar`` writes), so logging needs TensorFlow only; ``pip install 'robustlab[tensorboard]'``
to view them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from robustlab.errors import RobustlabError

DEFAULT_MLFLOW_URI = "./mlruns"
EXPERIMENT = "robustlab"
MLFLOW_INSTALL = "pip install 'robustlab[mlflow]' (or pip install mlflow)"
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_\-.:/ ]")


def metric_key(row_name: str, metric: str) -> str:
    """``("fgsm[eps=8/255]", "f1")`` -> ``"fgsm:eps_8/255.f1"`` (see the module docstring)."""
    text = f"{row_name}.{metric}".replace("[", ":").replace(",", ":").replace("]", "").replace("=", "_")
    return _NOT_ALLOWED.sub("_", text)


def row_name(row: Mapping[str, Any]) -> str:
    """A row as policies name it: ``clean``, ``worst-case``, ``fgsm[eps=8/255]``, ``mixed[fgsm,eps=8/255]``."""
    from robustlab.reporting.tables import param_display

    param = ",".join(param_display(row.get("param") or "").split(", ")) if row.get("param") else ""
    kind, variant = row["set"], row["variant"]
    if variant in ("none", "") or kind in ("clean", "worst-case"):
        return kind
    inner = ",".join(p for p in (variant if kind == "mixed" else "", param) if p)
    head = "mixed" if kind == "mixed" else variant
    return f"{head}[{inner}]" if inner else head


def row_metrics(rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """Every number of every row as ``{metric_key: value}``; None, text and booleans are left out,
    ``[lo, hi]`` intervals become ``KEY.lo`` / ``KEY.hi``. Two rows mapping to one key: ValueError."""
    out: dict[str, float] = {}
    for r in rows:
        name = row_name(r)
        for k, v in r.items():
            if k in ("set", "variant", "param", "note") or v is None or isinstance(v, (bool, str)):
                continue
            if isinstance(v, (list, tuple)):
                pairs = [(f"{k}.lo", v[0]), (f"{k}.hi", v[1])] if len(v) == 2 else []
            else:
                pairs = [(k, v)]
            for mk, mv in pairs:
                if mv is None or not isinstance(mv, (int, float)):
                    continue
                key = metric_key(name, mk)
                if key in out:
                    raise ValueError(f"two rows map to the MLflow metric {key!r}")
                out[key] = float(mv)
    return out


def run_params(info: Mapping[str, Any]) -> dict[str, str]:
    """The run's settings from run.json, as MLflow parameters (strings; long values cut to 500 characters)."""
    det = info.get("detector") or {}
    data = info.get("data") or {}
    params: dict[str, Any] = {
        "detector": det.get("name"),
        "detector_spec": det.get("spec_file"),
        "model_format": det.get("format"),
        "positive": det.get("positive"),
        "threshold": info.get("threshold"),
        "seed": info.get("seed"),
        "batch_size": info.get("batch_size"),
        "data": data.get("root"),
        "data_fingerprint": data.get("fingerprint"),
        "images": data.get("n"),
        "attack_fraction": info.get("attack_fraction"),
        "attacked": info.get("attacked"),
        "variants": ";".join(f"{v['variant']}[{v['param']}]" if v.get("param") else v["variant"] for v in info.get("variants") or []),
        "command": " ".join(info.get("command") or []),
        "robustlab": (info.get("versions") or {}).get("robustlab"),
    }
    return {k: str(v)[:500] for k, v in params.items() if v not in (None, "")}


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise RobustlabError("MLflow is not installed", thing="--mlflow", fix=MLFLOW_INSTALL) from None
    return mlflow


def tracking_uri(uri: str | None) -> str:
    """A local path (default ``./mlruns``) -> an absolute ``file:`` URI; other URIs unchanged."""
    uri = uri or DEFAULT_MLFLOW_URI
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", uri) and not re.match(r"^[A-Za-z]:[\\/]", uri):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def check_mlflow(uri: str | None) -> str:
    """Before any work: MLflow importable, the URI usable; returns the URI :func:`log_run` will use."""
    _mlflow()
    full = tracking_uri(uri)
    if full.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        path = Path(full.removeprefix("file://"))
        if path.exists() and not path.is_dir():
            raise RobustlabError("exists and is not a folder", thing=path, fix="give --mlflow a folder (an MLflow file store) or a tracking URI")
    return full


def log_run(run_dir: "str | os.PathLike", uri: str | None = None, *, experiment: str = EXPERIMENT) -> str:
    """Log a finished run folder to MLflow at ``uri`` (default ``./mlruns``): parameters, every
    row's metrics, the folder as artifacts under ``run/``; returns the MLflow run id.
    RobustlabError (exit 2) when MLflow is missing or the tracking store refuses."""
    from robustlab.reporting.rundata import read_rows

    full = check_mlflow(uri)
    mlflow = _mlflow()
    folder = Path(run_dir)
    info, rows, _ = read_rows(folder)
    try:
        mlflow.set_tracking_uri(full)
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=str((info.get("detector") or {}).get("name") or folder.name)) as active:
            command = info.get("command") or []
            mlflow.set_tags({"robustlab.run_folder": str(folder.resolve()), "robustlab.command": command[1] if len(command) > 1 else "robustlab"})
            mlflow.log_params(run_params(info))
            mlflow.log_metrics(row_metrics(rows))
            mlflow.log_artifacts(str(folder), artifact_path="run")
            return str(active.info.run_id)
    except mlflow.exceptions.MlflowException as exc:
        text = " ".join(str(exc).split())[:200]
        raise RobustlabError(f"MLflow refused the run ({text}); the run folder {folder} is complete", thing=full, fix="check the tracking URI, or log later with `robustlab.tracking.log_run`") from None


class TensorBoardHistory:
    """``on_epoch_end`` hook: each history row's numbers as TensorBoard scalars (``step = epoch``)
    in ``logdir`` (created; the files are TensorFlow event files)."""

    def __init__(self, logdir: "str | os.PathLike"):
        self.logdir = Path(logdir)
        if self.logdir.exists() and not self.logdir.is_dir():
            raise RobustlabError("exists and is not a folder", thing=self.logdir, fix="give --tensorboard a folder")
        self._writer: Any = None

    def __call__(self, row: Mapping[str, Any]) -> None:
        import tensorflow as tf

        if self._writer is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.logdir))
        from tensorflow.core.framework.summary_pb2 import SummaryMetadata

        def meta(plugin: str) -> Any:  # what tf.summary.scalar / .text write, without the tensorboard package
            return SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=plugin))

        step = int(row["epoch"])
        with self._writer.as_default():
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    tf.summary.write(k, tf.constant(float(v), tf.float32), step=step, metadata=meta("scalars"))
            events = row.get("event")
            if events:
                tf.summary.write("event", tf.constant(str(events)), step=step, metadata=meta("text"))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
