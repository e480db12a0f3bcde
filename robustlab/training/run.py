"""Adversarial fine-tuning: a detector trained on batches in which a share of the images is attacked.

:func:`adv_train` fine-tunes a loaded detector on a TRAIN set with a streaming pipeline: every batch
comes from :meth:`robustlab.data.Dataset.batches` (a new seeded order each epoch) and a ``ratio``
share of its images is replaced by adversarial examples made **against the current weights**, inside
the training step, in plain TensorFlow:

* ``fgsm``: one signed-gradient step of size ``eps``;
* ``fgsm-rs``: FGSM from a uniform random start in the eps-ball with step ``1.25 * eps``, projected
  back to the ball (the "fast adversarial training" recipe of Wong et al., 2020);
* ``pgd``: ``pgd_steps`` steps of size ``pgd_step`` (default ``2.5 * eps / steps``) from a random start.

Attacks take the gradient of the cross-entropy of ``detector.class_logits(x01, training=False)``
with respect to ``x01`` float32 (N, H, W, 3) RGB in [0, 1]; ``eps`` is a fraction of the pixel
range and images are clipped to [0, 1]. Training goes through ``detector.class_logits(x01,
training=True)`` so the model's own preprocessing stays inside the graph; the trained variables
are those of ``detector.model``.

After every epoch: validation loss and accuracy (clean, and under the training attack), a guard
against catastrophic overfitting (FGSM and PGD accuracy on a fixed validation batch; when PGD
accuracy collapses while FGSM accuracy holds or climbs, training stops and the best earlier epoch
is kept), early stopping and reduce-on-plateau on the monitored validation loss, and a checkpoint
(weights, optimizer state, schedule state and history). All randomness is keyed by
``(seed, epoch, step)``, so the RNG position is the epoch counter and :func:`resume_adv_train`
continues after a kill with the same result as an uninterrupted run.

``NEW`` is built in a hidden sibling folder (``.NEW.adv-train-partial``) and renamed into place when
complete. It holds ``model.keras`` (Keras 3), ``detector.yaml`` (the input's preprocessing and a
threshold re-picked on VAL), ``history.csv`` + ``history.png``, ``train.json``, ``run.json`` and
``before-after/`` (``before/`` and ``after/`` run folders and a side-by-side ``comparison.md``).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from robustlab.errors import RobustlabError
from robustlab.runs import atomic_write_text, to_json
from robustlab.training.checkpoints import (
    HISTORY_FIELDS,
    TrainState,
    _assign,
    _Checkpoints,
    _load_npz,
    _model_arrays,
    file_sha256,
    guard_collapse,
    schedule_step,
)
from robustlab.training.compare import (
    _checks,
    comparison_markdown,
    comparison_rows,
    default_eval_variants,
)
from robustlab.training.config import FinetuneConfig, _leaf_layers, check_trainable
from robustlab.training.folder import (
    CHECKPOINTS,
    FORMAT_VERSION,
    TrainingFolder,
    lock,
    partial_dir,
    read_record,
)
from robustlab.training.steps import TrainingDiverged, prepare_training

Log = Callable[[str], None]
EpochHook = Callable[[dict[str, Any]], None]

# --------------------------------------------------------------------------- results


@dataclass
class FinetuneResult:
    """What :func:`adv_train` returns."""

    out: Path
    history: list[dict[str, Any]]
    best_epoch: int
    stopped: str | None
    threshold: float
    threshold_note: str
    comparison: list[dict[str, Any]]
    info: dict[str, Any]


def pick_val_threshold(y_true: np.ndarray, y_score: np.ndarray, strategy: str = "max-f1", *, thing: "str | None" = None) -> tuple[float, str]:
    """A threshold from the validation PR curve -> (threshold, how it was picked).

    The strategy picks through :func:`robustlab.evaluation.thresholds.pick_threshold`, whose
    threshold is the top of a plateau ``(plateau_low, threshold]`` of equal VAL predictions: that
    is the score of one VAL image of the positive class, so the smallest perturbation of it (or
    of any image like it) crosses the threshold. The new detector gets the **middle** of the
    plateau instead: the same VAL predictions and metrics, the widest margin on both sides
    (``fixed:T`` keeps ``T``). ``score >= threshold`` is positive.
    """
    from robustlab.evaluation.thresholds import pick_threshold

    picked = pick_threshold(np.asarray(y_true), np.asarray(y_score), strategy, thing=thing)
    note = f"robustlab.evaluation.thresholds.pick_threshold(strategy={picked.strategy}) on VAL"
    if picked.plateau_low is None or str(picked.strategy).startswith("fixed"):
        return float(picked.threshold), note
    middle = (float(picked.threshold) + float(picked.plateau_low)) / 2.0
    return middle, f"{note}, middle of its plateau ({picked.plateau_low:.6g}, {picked.threshold:.6g}]"


def _open_sets(run: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    from robustlab.data import open_dataset

    classes = run.get("classes")
    train = open_dataset(run["train"], classes=classes)
    val = open_dataset(run["val"], classes=classes)
    test = open_dataset(run["test"], classes=classes) if run.get("test") else val
    return train, val, test


def _input_paths(spec: Any, data: Mapping[str, Any]) -> list[Path]:
    """Everything a run reads: the detector's files and the TRAIN / VAL / TEST sets."""
    paths = [p for p in (spec.model, spec.weights, spec.source) if p is not None]
    return paths + [Path(data[k]) for k in ("train", "val", "test") if data.get(k)]


# --------------------------------------------------------------------------- entry points


def adv_train(
    detector: Any,
    train: "str | os.PathLike",
    val: "str | os.PathLike | None",
    *,
    out: "str | os.PathLike",
    config: FinetuneConfig = FinetuneConfig(),
    test: "str | os.PathLike | None" = None,
    classes: str | None = None,
    trust_model: bool = False,
    force: bool = False,
    eval_attacks: Sequence[str] | None = None,
    eval_corruptions: Sequence[str] | None = None,
    eval_fraction: float = 1.0,
    progress: bool = False,
    log: Log = lambda s: None,
    command: Sequence[str] | None = None,
    on_epoch_end: EpochHook | None = None,
) -> FinetuneResult:
    """Fine-tune ``detector`` on TRAIN with adversarial mixing; write the folder ``out`` (NEW).

    ``detector`` is a loaded :class:`~robustlab.detector.model.Detector` (never modified: a fresh copy
    is loaded from its spec, with ``trust_model``, and trained); ``train``, ``val`` and ``test`` are
    DATA arguments (``test`` defaults to ``val``; it is where the before/after run folders are
    evaluated). ``eval_attacks`` / ``eval_corruptions`` are specs for
    :func:`robustlab.attacks.variant.parse_attacks` and :func:`robustlab.corruptions.variant.parse_corruptions`
    (default: FGSM and PGD at the training eps, and the default corruptions). ``on_epoch_end(row)``
    gets each finished epoch's history row. Raises :class:`RobustlabError` for bad input (exit 2 at
    the CLI), also when training diverges (a NaN or infinite loss: nothing is published).
    """
    config = config.validated()
    if val is None or str(val).strip() == "":
        raise RobustlabError("no validation set", fix="pass --val VAL (a held-out DATA set: early stopping, the guard and the new threshold are picked on it)")
    if not (isinstance(eval_fraction, (int, float)) and 0.0 < float(eval_fraction) <= 1.0):
        raise RobustlabError(f"--eval-fraction {eval_fraction} is outside (0, 1]", fix="e.g. --eval-fraction 0.3")
    check_trainable(detector)
    data = {
        "train": str(Path(train).resolve()),
        "val": str(Path(val).resolve()),
        "test": str(Path(test).resolve()) if test is not None else None,
        "classes": classes,
    }
    sets = _open_sets(data)
    folder = TrainingFolder(out, force=force, inputs=_input_paths(detector.spec, data))
    try:
        record = _new_record(folder, force, config, detector.spec, data, sets, eval_attacks, eval_corruptions, eval_fraction, command)
        folder.write_record(record)
    except BaseException:
        folder.abort()
        raise
    return _run(folder, record, detector, sets, trust_model=trust_model, progress=progress, log=log, on_epoch_end=on_epoch_end)


def _new_record(folder: TrainingFolder, force: bool, config: FinetuneConfig, spec: Any, data: Mapping[str, Any], sets: tuple[Any, Any, Any], eval_attacks: Sequence[str] | None, eval_corruptions: Sequence[str] | None, eval_fraction: float, command: Sequence[str] | None) -> dict[str, Any]:
    """The resume record ``run.json``: everything that decides the result (never the trust decision)."""
    return {
        "format": FORMAT_VERSION,
        "out": str(folder.final),
        "force": bool(force),
        "config": config.to_dict(),
        "detector_spec": spec.to_dict(),
        "detector_source": str(spec.source) if spec.source else None,
        **data,
        "eval": {
            "attacks": list(eval_attacks) if eval_attacks is not None else None,
            "corruptions": list(eval_corruptions) if eval_corruptions is not None else None,
            "fraction": float(eval_fraction),
        },
        "fingerprints": {"train": sets[0].fingerprint(), "val": sets[1].fingerprint(), "model": file_sha256(spec.model)},
        "command": list(command) if command is not None else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def resume_adv_train(
    out: "str | os.PathLike",
    *,
    trust_model: bool = False,
    progress: bool = False,
    log: Log = lambda s: None,
    on_epoch_end: EpochHook | None = None,
    expect: Mapping[str, Any] | None = None,
) -> FinetuneResult:
    """Continue an interrupted :func:`adv_train` for ``out`` from its last complete epoch.

    The checkpoint's ``run.json`` is checked before anything is loaded from it. ``trust_model``
    comes from the caller (``--trust-model`` / ``ROBUSTLAB_TRUST_MODEL``), never from the checkpoint.
    ``expect``: settings the caller gave again (``config`` keys, ``train``/``val``/``test`` paths);
    any that differ from the interrupted run's is a RobustlabError.
    """
    from robustlab.detector.loading import load_detector

    out = Path(out).resolve()
    partial = partial_dir(out)
    if not partial.exists() or not (partial / "run.json").exists():
        if out.is_dir() and (out / "train.json").exists():
            raise RobustlabError("this adv-train finished; there is nothing to resume", thing=out, fix="start a new run with another --out")
        raise RobustlabError("no interrupted adv-train for this --out", thing=out, fix=f"there is no {partial.name} beside it; start a new run without --resume")
    record = read_record(partial)
    config = _record_config(record, partial / "run.json")
    if record["out"] != str(out):
        raise RobustlabError(f"the checkpoint was made for --out {record['out']}", thing=partial / "run.json", fix="resume it where it was made, or start over with --force")
    _check_expected(record, config, expect or {}, partial)
    spec = _record_spec(record, partial / "run.json")
    folder = TrainingFolder(out, force=record["force"], resume=True, inputs=_input_paths(spec, record))
    lock(partial)
    if not spec.model.exists():
        raise RobustlabError("the input model of the interrupted run is gone", thing=spec.model, fix="restore it, or start over")
    if file_sha256(spec.model) != record["fingerprints"]["model"]:
        raise RobustlabError("the input model changed since the interrupted run started", thing=spec.model, fix="start over with --force")
    detector = load_detector(spec, trust_model=trust_model)
    sets = _open_sets(record)
    for name, ds in (("train", sets[0]), ("val", sets[1])):
        if ds.fingerprint() != record["fingerprints"][name]:
            raise RobustlabError(f"the {name} set changed since the interrupted run started", thing=record[name], fix="start over with --force")
    return _run(folder, record, detector, sets, trust_model=trust_model, progress=progress, log=log, on_epoch_end=on_epoch_end)


def _record_config(record: Mapping[str, Any], thing: Path) -> FinetuneConfig:
    """The checkpoint's FinetuneConfig: every field present and valid, else RobustlabError naming ``thing``."""
    missing = sorted(set(FinetuneConfig.__dataclass_fields__) - set(record["config"]))
    if missing:
        raise RobustlabError(f"not a complete adv-train checkpoint: config lacks {', '.join(missing)}", thing=thing, fix="start over with --force (this interrupted run cannot be resumed)")
    try:
        return FinetuneConfig.from_dict(record["config"])
    except RobustlabError as exc:
        raise RobustlabError(f"not a valid adv-train checkpoint: config: {exc.problem}", thing=thing, fix="start over with --force (this interrupted run cannot be resumed)") from None


def _record_spec(record: Mapping[str, Any], thing: Path) -> Any:
    """The input detector's spec from the checkpoint (validated by make_spec; errors name ``thing``)."""
    from robustlab.detector.spec import make_spec

    values = {k: v for k, v in record["detector_spec"].items() if v is not None}
    src = record["detector_source"]
    try:
        return make_spec(values, base_dir=Path(src).parent if src else Path.cwd(), source=Path(src) if src else None)
    except RobustlabError as exc:
        raise RobustlabError(f"not a valid adv-train checkpoint: detector_spec: {exc.problem}", thing=thing, fix="start over with --force (this interrupted run cannot be resumed)") from None
    except (TypeError, ValueError) as exc:
        raise RobustlabError(f"not a valid adv-train checkpoint: detector_spec ({exc.__class__.__name__})", thing=thing, fix="start over with --force (this interrupted run cannot be resumed)") from None


def _check_expected(record: Mapping[str, Any], config: FinetuneConfig, expect: Mapping[str, Any], partial: Path) -> None:
    """RobustlabError when a setting given again on the command line differs from the checkpoint's."""
    saved_config = config.to_dict()
    for key, value in expect.items():
        saved = saved_config.get(key, record.get(key))
        if key in ("train", "val", "test") and value is not None:
            value = str(Path(value).resolve())
        if isinstance(saved, float) and isinstance(value, (int, float)):
            same = math.isclose(saved, float(value), rel_tol=1e-9, abs_tol=1e-12)
        else:
            same = saved == value or str(saved) == str(value)
        if not same:
            raise RobustlabError(f"{key} is {value!r} but the interrupted run used {saved!r}", thing=partial, fix="resume with the same settings (or none: they are read from the checkpoint), or start over with --force")


# --------------------------------------------------------------------------- training


def _run(folder: TrainingFolder, record: dict[str, Any], source_detector: Any, sets: tuple[Any, Any, Any], *, trust_model: bool, progress: bool, log: Log, on_epoch_end: EpochHook | None) -> FinetuneResult:
    """Train (from the last checkpoint, if any), write the outputs, publish NEW.

    A diverging loss, or a RobustlabError before the first complete epoch, removes the unfinished
    folder: nothing is published and the input model is untouched. Other errors (a damaged
    checkpoint, data gone mid-run) and a KeyboardInterrupt keep it for ``--resume``.
    """
    t_start = time.time()
    try:
        session = _Session(folder, record, source_detector, sets, trust_model=trust_model, log=log)
        session.train(progress=progress, on_epoch_end=on_epoch_end)
        threshold, threshold_note = session.keep_best()
        outputs = _write_outputs(session, threshold, threshold_note, time.time() - t_start, progress)
    except RobustlabError as exc:
        if isinstance(exc, TrainingDiverged) or not (folder.dir / CHECKPOINTS / "LATEST").exists():
            folder.abort()  # nothing worth resuming: a diverged run, or no complete epoch yet
        raise
    comp, info = outputs
    folder.commit({k: v for k, v in info.items() if k != "history"})
    state = session.state
    return FinetuneResult(folder.final, state.history, state.best_epoch, state.stopped, threshold, threshold_note, comp, info)


class _Session:
    """One process's share of a fine-tuning run: the private detector copy, its compiled steps,
    the schedule state (restored from the last checkpoint) and the guard's validation batch."""

    def __init__(self, folder: TrainingFolder, record: dict[str, Any], source_detector: Any, sets: tuple[Any, Any, Any], *, trust_model: bool, log: Log):
        from robustlab.detector.loading import load_detector

        self.folder, self.record, self.source, self.log = folder, record, source_detector, log
        self.trust_model = trust_model
        self.config = FinetuneConfig.from_dict(record["config"])
        self.train_set, self.val_set, self.test_set = sets
        self.det = load_detector(source_detector.spec, trust_model=trust_model)  # a private copy to train
        model = self.det.model
        self.original_flags = [(layer, layer.trainable) for layer in [model, *_leaf_layers(model)]]
        self.steps, self.chosen = prepare_training(self.det, self.config, self.train_set)
        self.ckpts = _Checkpoints(folder.dir)
        self.state, self.best_arrays = self._restore(_model_arrays(model))
        self.guard_batch = self._guard_batch()

    def _restore(self, initial: list[np.ndarray]) -> tuple[TrainState, list[np.ndarray]]:
        """The state after the last complete epoch (weights, optimizer, schedule), or a fresh one."""
        latest = self.ckpts.latest()
        if latest is None:
            return TrainState(lr=self.config.lr), initial
        state, best_file = self.ckpts.read_state(latest)
        _assign(self.det.model.variables, _load_npz(latest / "model.npz"), "weights", latest)
        _assign(self.steps.optimizer.variables, _load_npz(latest / "optimizer.npz"), "optimizer state", latest)
        best = _load_npz(self.ckpts.dir / best_file)
        self.steps.optimizer.learning_rate = state.lr
        self.log(f"robustlab adv-train: resuming after epoch {state.epoch} of {self.config.epochs} ({latest})")
        return state, best

    def _guard_batch(self) -> Any:
        """The guard's validation batch: stratified, seeded (robustlab.sampling), fixed for the run."""
        from robustlab.sampling import stratified_subset

        config, val_set = self.config, self.val_set
        if not config.guard or len(val_set) == 0:
            return None
        fraction = min(1.0, config.guard_size / len(val_set))
        idx = stratified_subset(val_set.labels_for(self.det.positive), fraction, config.seed)
        batch = val_set.load_arrays(self.det.input_size, method=self.det.spec.preprocessing, indices=idx, batch_size=config.batch_size, positive=self.det.positive)
        return batch if len(batch.idx) else None

    def guard(self) -> dict[str, float] | None:
        """Accuracy on the guard batch: clean, FGSM and PGD at eps (None without a guard)."""
        if self.guard_batch is None:
            return None
        bs, seed = self.config.batch_size, self.config.seed
        y = self.guard_batch.y.astype(np.int32)
        clean = fgsm = pgd = 0.0
        for s in range(0, len(y), bs):
            c, f, p = self.steps.guard_step(self.guard_batch.x[s : s + bs], y[s : s + bs], np.asarray([seed, 7_000_000 + s], np.int32))
            clean, fgsm, pgd = clean + float(c), fgsm + float(f), pgd + float(p)
        n = float(len(y))
        return {"clean": clean / n, "fgsm": fgsm / n, "pgd": pgd / n}

    def validate(self) -> dict[str, float]:
        """VAL loss and accuracy, clean and under the training attack (seeded per batch)."""
        det, config = self.det, self.config
        v_loss = v_corr = a_loss = a_corr = v_n = 0.0
        for vb_no, vb in enumerate(self.val_set.batches(det.input_size, method=det.spec.preprocessing, batch_size=config.batch_size, positive=det.positive)):
            if len(vb.idx) == 0:
                continue
            y = vb.y.astype(np.int32)
            l1, c1, l2, c2 = self.steps.val_step(vb.x, y, np.asarray([config.seed, 5_000_000 + vb_no], np.int32))
            v_loss, v_corr, a_loss, a_corr, v_n = v_loss + float(l1), v_corr + float(c1), a_loss + float(l2), a_corr + float(c2), v_n + len(y)
        if v_n == 0:
            raise RobustlabError("no validation image could be read", thing=self.record["val"], fix="check the files (see the skipped list above)")
        return {"val_loss": v_loss / v_n, "val_accuracy": v_corr / v_n, "val_adv_loss": a_loss / v_n, "val_adv_accuracy": a_corr / v_n}

    def train(self, *, progress: bool, on_epoch_end: EpochHook | None) -> None:
        """Epochs until the schedule stops or ``config.epochs``; a checkpoint after each."""
        config, state = self.config, self.state
        if state.guard_baseline is None and config.guard:
            state.guard_baseline = self.guard()
            if state.guard_baseline:
                gb = state.guard_baseline
                self.log(f"robustlab adv-train: before training, guard batch ({len(self.guard_batch.idx)} val images): clean {gb['clean']:.1%}, FGSM {gb['fgsm']:.1%}, PGD {gb['pgd']:.1%} at eps={config.eps:.4g}")
        self.log(
            f"robustlab adv-train: {len(self.train_set)} train / {len(self.val_set)} val images, {config.epochs} epoch(s), "
            f"ratio {config.ratio:g} {self.steps.train_attack_desc}, {self.chosen['parameters']} trainable parameters "
            f"({config.trainable}{', BatchNorm frozen' if self.chosen['frozen_batchnorm'] else ''}), {config.optimizer} lr {config.lr:g}"
        )
        while state.stopped is None and state.epoch < config.epochs:
            row = self.epoch(state.epoch + 1, progress)
            if on_epoch_end is not None:
                on_epoch_end(dict(row))

    def epoch(self, epoch: int, progress: bool) -> dict[str, Any]:
        """Train one epoch, validate, guard, step the schedule, checkpoint -> the history row."""
        config, state = self.config, self.state
        t0 = time.time()
        stats = self.steps.train_epoch(self.train_set, epoch, progress=progress)
        train_seconds = time.time() - t0
        if stats["n"] == 0:
            raise RobustlabError("no training image could be read", thing=self.record["train"], fix="check the files (see the skipped list above)")
        row: dict[str, Any] = {"epoch": epoch, "lr": float(state.lr), "loss": stats["loss"], "accuracy": stats["accuracy"], "adv_share": stats["adv_share"], **self.validate()}
        row["val_mix_loss"] = (1 - config.ratio) * row["val_loss"] + config.ratio * row["val_adv_loss"]
        g = self.guard()
        reason = None
        if g is not None:
            row.update(guard_clean_accuracy=g["clean"], guard_fgsm_accuracy=g["fgsm"], guard_pgd_accuracy=g["pgd"])
            reason = guard_collapse(state.history, row, config.guard_drop)
        lr_before = state.lr
        events = schedule_step(state, row, config, collapse=reason)
        if state.lr != lr_before:
            self.steps.optimizer.learning_rate = state.lr
        new_best = None
        if "best" in events:
            new_best = self.best_arrays = _model_arrays(self.det.model)
        elif state.best_epoch == 0 and len(state.history) == 0:
            new_best = self.best_arrays  # no trained epoch is better yet: the checkpoint keeps the input weights
        row.update(event=" ".join(events), train_seconds=train_seconds, seconds=time.time() - t0)
        state.history.append(row)
        state.epoch = epoch
        state.seconds += row["seconds"]
        self.ckpts.save(state, self.det.model, self.steps.optimizer, new_best)
        self._log_epoch(row, g)
        return row

    def _log_epoch(self, row: Mapping[str, Any], g: Mapping[str, float] | None) -> None:
        guard_text = f", guard FGSM {g['fgsm']:.1%} PGD {g['pgd']:.1%}" if g else ""
        self.log(
            f"robustlab adv-train: epoch {row['epoch']}/{self.config.epochs}: loss {row['loss']:.4f} acc {row['accuracy']:.1%}, "
            f"val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.1%}, val_adv_acc {row['val_adv_accuracy']:.1%}"
            f"{guard_text} ({row['train_seconds']:.1f} s train, {row['seconds']:.1f} s total){' [' + row['event'] + ']' if row['event'] else ''}"
        )
        if self.state.stopped:
            self.log(f"robustlab adv-train: {self.state.stopped}; keeping epoch {self.state.best_epoch}")

    def keep_best(self) -> tuple[float, str]:
        """Put the best epoch's weights back, restore the layers' trainable flags, pick the new
        threshold on VAL -> (threshold, how it was picked)."""
        config, det = self.config, self.det
        _assign(det.model.variables, self.best_arrays, "best weights", self.folder.dir)
        for layer, flag in self.original_flags:
            layer.trainable = flag
        scores, labels = [], []
        for vb in self.val_set.batches(det.input_size, method=det.spec.preprocessing, batch_size=config.batch_size, positive=det.positive):
            if len(vb.idx):
                scores.append(det.scores(vb.x))
                labels.append(vb.y)
        y_v, s_v = np.concatenate(labels), np.concatenate(scores)
        try:
            threshold, note = pick_val_threshold(y_v, s_v, config.threshold_strategy, thing=self.record["val"])
        except RobustlabError as exc:  # e.g. a precision target the new model does not reach: keep the training
            threshold, note = pick_val_threshold(y_v, s_v, "max-f1", thing=self.record["val"])
            note = f"{note} (--threshold-strategy {config.threshold_strategy} failed: {exc.problem})"
            self.log(f"robustlab adv-train: warning: --threshold-strategy {config.threshold_strategy} failed on VAL ({exc.problem}); used max-f1")
        state = self.state
        kept = f"epoch {state.best_epoch}" if state.best_epoch else f"epoch 0, the input weights (no epoch improved {config.monitor})"
        self.log(f"robustlab adv-train: kept {kept}; threshold {threshold:.4f} ({note})")
        return threshold, note


# --------------------------------------------------------------------------- outputs


def _new_spec(det: Any, threshold: float, name: str) -> dict[str, Any]:
    """The NEW detector.yaml: the input's preprocessing, resolved, with the re-picked threshold."""
    spec = det.spec
    out: dict[str, Any] = {
        "name": name,
        "model": "model.keras",
        "input_size": list(det.input_size),
        "resize": str(spec.resize),
        "decode": str(spec.decode),
        "alpha": str(spec.alpha),
        "bit16": str(spec.bit16),
        "exif": str(spec.exif),
        "color": str(spec.color),
        "scale": str(spec.scale),
        "output": str(det.output),
        "classes": list(det.classes),
        "positive": det.positive,
        "threshold": float(threshold),  # in full: rounding could move it across a VAL score
    }
    if spec.custom_objects:
        out["custom_objects"] = dict(spec.custom_objects)
    return out


def _write_history(partial: Path, history: list[dict[str, Any]], best_epoch: int, stopped: str | None) -> None:
    from robustlab.reporting.plots import _plt

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_FIELDS)
    for r in history:
        writer.writerow(["" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r[k]) for k in HISTORY_FIELDS])
    atomic_write_text(partial / "history.csv", buf.getvalue())

    plt = _plt()
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("loss", "-o"), ("val_loss", "-s"), ("val_adv_loss", "--s")):
        ax1.plot(epochs, [r[key] for r in history], style, label=key)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    for key, style in (("accuracy", "-o"), ("val_accuracy", "-s"), ("val_adv_accuracy", "--s"), ("guard_fgsm_accuracy", ":^"), ("guard_pgd_accuracy", ":v")):
        vals = [r.get(key) for r in history]
        if any(v is not None for v in vals):
            ax2.plot(epochs, [np.nan if v is None else v for v in vals], style, label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(-0.02, 1.02)
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.axvline(best_epoch, color="grey", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
    fig.suptitle(f"adv-train history (kept epoch {best_epoch})" + (" - stopped early" if stopped else ""))
    fig.tight_layout()
    tmp = partial / ".history.png.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, partial / "history.png")


def _write_outputs(session: _Session, threshold: float, threshold_note: str, seconds: float, progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """model.keras, detector.yaml, history.csv/.png, before-after/ and train.json into the
    unfinished folder -> (comparison rows, train.json contents)."""
    folder, state = session.folder, session.state
    _write_model_files(session, threshold)
    _write_history(folder.dir, state.history, state.best_epoch, state.stopped)
    comp = _before_after(session, threshold, threshold_note, progress)
    info = _train_info(session, threshold, threshold_note, seconds)
    atomic_write_text(folder.path("train.json"), to_json(info))
    return json.loads(to_json({"rows": comp}))["rows"], info


def _write_model_files(session: _Session, threshold: float) -> None:
    """The trained model (Keras 3) and its detector.yaml (the input's preprocessing, the new threshold)."""
    folder, source, config = session.folder, session.source, session.config
    model_tmp = folder.path(".model.tmp.keras")
    session.det.model.save(model_tmp)
    os.replace(model_tmp, folder.path("model.keras"))
    spec_values = _new_spec(session.det, threshold, f"{source.spec.name}-advtrained")
    header = (
        f"# robustlab adv-train: {source.spec.name} fine-tuned with {config.ratio:g} {config.attack} mixing at eps={config.eps:.5g}\n"
        f"# preprocessing copied from {source.spec.source or source.spec.model}; threshold re-picked on VAL\n"
    )
    atomic_write_text(folder.path("detector.yaml"), header + yaml.safe_dump(spec_values, sort_keys=False))


def _before_after(session: _Session, threshold: float, threshold_note: str, progress: bool) -> list[dict[str, Any]]:
    """``before-after/``: the input and the new detector evaluated on TEST (VAL without --test) with
    the same variants, seed and subset, and the comparison (.md, .json, .csv) -> comparison rows."""
    from robustlab.detector.loading import load_detector
    from robustlab.evaluation.pipeline import EvaluationPlan
    from robustlab.evaluation.pipeline import run as run_plan

    folder, record, config, source, test_set = session.folder, session.record, session.config, session.source, session.test_set
    out = folder.final
    new_det = load_detector(folder.path("detector.yaml"), trust_model=session.trust_model)
    variants = default_eval_variants(config.eps, record["eval"]["attacks"], record["eval"]["corruptions"])
    ba = folder.path("before-after")
    shutil.rmtree(ba, ignore_errors=True)
    fraction = float(record["eval"]["fraction"])
    command = tuple(record["command"]) if record.get("command") else None

    def evaluated(detector: Any, where: Path, detector_info: "dict[str, Any] | None" = None) -> Any:
        plan = EvaluationPlan(detector, test_set, tuple(variants), fraction, where, True, seed=config.seed, batch_size=config.batch_size, progress=progress, command=command, config={"adv_train": str(out)}, checks=_checks(detector, variants), detector_info=detector_info)
        return run_plan(plan).result

    session.log(f"robustlab adv-train: evaluating the input detector and the new one on {test_set.root} ({len(test_set)} images)")
    before = evaluated(source, ba / "before")
    after_desc = new_det.describe()
    after_desc["spec"] = {**after_desc["spec"], "model": str(out / "model.keras")}
    after_desc["spec_file"] = str(out / "detector.yaml")
    after = evaluated(new_det, ba / "after", after_desc)
    comp = comparison_rows(before.rows, after.rows)
    _write_comparison(ba, comp, session, threshold, threshold_note)
    return comp


def _write_comparison(ba: Path, comp: list[dict[str, Any]], session: _Session, threshold: float, threshold_note: str) -> None:
    """``comparison.md`` (with a summary of the run), ``comparison.json`` and ``comparison.csv``."""
    source, config, state, record, test_set = session.source, session.config, session.state, session.record, session.test_set
    out = session.folder.final
    summary = [
        f"Before: `{source.spec.source or source.spec.model}` (threshold {source.threshold:g}).",
        f"After: `{out / 'detector.yaml'}` (threshold {threshold:.4f}, {threshold_note}); kept epoch {state.best_epoch} of {len(state.history)} trained.",
        f"Training: ratio {config.ratio:g} of each batch {session.steps.train_attack_desc}; {config.optimizer} lr {config.lr:g}; trainable {config.trainable}.",
        f"Data: `{test_set.root}` ({len(test_set)} images); attacked subset fraction {float(record['eval']['fraction']):g}, seed {config.seed}.",
    ]
    if not record.get("test"):
        summary.append("**Optimistic**: no --test was given, so these rows are on VAL, where the kept epoch and the new threshold were picked. Evaluate on a held-out set before trusting them.")
    if state.stopped:
        summary.append(f"Stopped early: {state.stopped}.")
    atomic_write_text(ba / "comparison.md", comparison_markdown(comp, title=f"robustlab adv-train: {source.spec.name} before / after", summary=summary))
    atomic_write_text(ba / "comparison.json", to_json({"rows": comp}))
    buf = io.StringIO()
    if comp:
        writer = csv.DictWriter(buf, fieldnames=list(comp[0].keys()), lineterminator="\n")
        writer.writeheader()
        for r in comp:
            writer.writerow({k: "" if v is None else v for k, v in r.items()})
    atomic_write_text(ba / "comparison.csv", buf.getvalue())


def _train_info(session: _Session, threshold: float, threshold_note: str, seconds: float) -> dict[str, Any]:
    """``train.json``: the settings, what trained, the history, the kept epoch, versions and timings."""
    from robustlab.runs import versions

    record, config, state = session.record, session.config, session.state
    return {
        "command": record.get("command"),
        "config": record["config"],
        "train": record["train"],
        "val": record["val"],
        "test": record.get("test"),
        "detector_in": session.source.describe(),
        "detector_out": str(session.folder.final / "detector.yaml"),
        "trainable": session.chosen,
        "training_attack": session.steps.train_attack_desc,
        "best_epoch": state.best_epoch,
        "epochs_trained": len(state.history),
        "stopped": state.stopped,
        "monitor": str(config.monitor),
        "best_value": state.best_value,
        "guard_baseline": state.guard_baseline,
        "threshold": threshold,
        "threshold_from": threshold_note,
        "history": state.history,
        "fingerprints": record["fingerprints"],
        "versions": versions(),
        "timings": {"train_seconds": round(state.seconds, 3), "this_session_seconds": round(seconds, 3)},
        "complete": True,
    }
