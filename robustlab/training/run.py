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
threshold re-picked on VAL), ``history.csv`` + ``history.png``, ``train.json`` and
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
    CHECKPOINTS,
    FORMAT_VERSION,
    HISTORY_FIELDS,
    TrainState,
    _assign,
    _Checkpoints,
    _inside,
    _load_npz,
    _lock,
    _model_arrays,
    file_sha256,
    guard_collapse,
    partial_dir,
    schedule_step,
)
from robustlab.training.compare import (
    _checks,
    comparison_markdown,
    comparison_rows,
    default_eval_variants,
)
from robustlab.training.config import FinetuneConfig, _leaf_layers, check_trainable
from robustlab.training.steps import prepare_training

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
    """A threshold from the validation PR curve -> (threshold, how it was picked), through
    :func:`robustlab.evaluation.thresholds.pick_threshold` (``score >= threshold`` is positive)."""
    from robustlab.evaluation.thresholds import pick_threshold

    picked = pick_threshold(np.asarray(y_true), np.asarray(y_score), strategy, thing=thing)
    return float(picked.threshold), f"robustlab.evaluation.thresholds.pick_threshold(strategy={picked.strategy}) on VAL"


def _open_sets(run: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    from robustlab.data import open_dataset

    classes = run.get("classes")
    train = open_dataset(run["train"], classes=classes)
    val = open_dataset(run["val"], classes=classes)
    test = open_dataset(run["test"], classes=classes) if run.get("test") else val
    return train, val, test


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
    log: Callable[[str], None] = lambda s: None,
    command: Sequence[str] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``detector`` on TRAIN with adversarial mixing; write the folder ``out`` (NEW).

    ``detector`` is a loaded :class:`~robustlab.detector.model.Detector` (never modified: a fresh copy
    is loaded from its spec and trained); ``train``, ``val`` and ``test`` are DATA arguments
    (``test`` defaults to ``val``; it is where the before/after run folders are evaluated).
    ``eval_attacks`` / ``eval_corruptions`` are specs for :func:`robustlab.attacks.parse_attacks`
    and :func:`robustlab.corruptions.parse_corruptions` (default: FGSM and PGD at the training eps,
    and the default corruptions). ``on_epoch_end(row)`` gets each finished epoch's history row.
    Raises :class:`RobustlabError` for bad input (exit 2 at the CLI).
    """
    config = config.validated()
    out = Path(out).resolve()
    if val is None or str(val).strip() == "":
        raise RobustlabError("no validation set", fix="pass --val VAL (a held-out DATA set: early stopping, the guard and the new threshold are picked on it)")
    if not 0.0 < float(eval_fraction) <= 1.0:
        raise RobustlabError(f"--eval-fraction {eval_fraction:g} is outside (0, 1]", fix="e.g. --eval-fraction 0.3")
    spec = detector.spec
    inputs = [p for p in (spec.model, spec.weights, spec.source) if p is not None]
    for p in inputs:
        if _inside(p, out):
            raise RobustlabError(f"the input detector ({p}) is inside --out", thing=out, fix="choose an --out folder that does not hold the input model")
    if out.exists() and not out.is_dir():
        raise RobustlabError("exists and is not a folder", thing=out, fix="choose another --out")
    if out.exists() and any(out.iterdir()) and not force:
        raise RobustlabError("already exists", thing=out, fix="choose another --out, or pass --force to replace it")
    partial = partial_dir(out)
    if partial.exists():
        if not force:
            raise RobustlabError(
                "an interrupted adv-train for this --out exists",
                thing=partial,
                fix=f"continue it with `robustlab adv-train --resume {out}`, or pass --force to start over",
            )
        _lock(partial)
        shutil.rmtree(partial)
    check_trainable(detector)
    run_inputs = {
        "train": str(Path(train).resolve()),
        "val": str(Path(val).resolve()),
        "test": str(Path(test).resolve()) if test is not None else None,
        "classes": classes,
    }
    train_set, val_set, test_set = _open_sets(run_inputs)
    partial.mkdir(parents=True)
    try:
        _lock(partial)
        run = {
            "format": FORMAT_VERSION,
            "out": str(out),
            "force": bool(force),
            "config": config.to_dict(),
            "detector_spec": spec.to_dict(),
            "detector_source": str(spec.source) if spec.source else None,
            "trust_model": bool(trust_model),
            **run_inputs,
            "eval": {"attacks": list(eval_attacks) if eval_attacks is not None else None, "corruptions": list(eval_corruptions) if eval_corruptions is not None else None, "fraction": float(eval_fraction)},
            "fingerprints": {"train": train_set.fingerprint(), "val": val_set.fingerprint(), "model": file_sha256(spec.model)},
            "command": list(command) if command is not None else None,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_text(partial / "run.json", to_json(run))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return _run(partial, run, detector, (train_set, val_set, test_set), progress=progress, log=log, on_epoch_end=on_epoch_end)


def resume_adv_train(
    out: "str | os.PathLike",
    *,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    expect: Mapping[str, Any] | None = None,
) -> FinetuneResult:
    """Continue an interrupted :func:`adv_train` for ``out`` from its last complete epoch.

    ``expect``: settings the caller gave again (``config`` keys, ``train``/``val``/``test`` paths);
    any that differ from the interrupted run's is a RobustlabError.
    """
    from robustlab.detector.loading import load_detector
    from robustlab.detector.spec import make_spec

    out = Path(out).resolve()
    partial = partial_dir(out)
    if not partial.exists() or not (partial / "run.json").exists():
        if out.is_dir() and (out / "train.json").exists():
            raise RobustlabError("this adv-train finished; there is nothing to resume", thing=out, fix="start a new run with another --out")
        raise RobustlabError("no interrupted adv-train for this --out", thing=out, fix=f"there is no {partial.name} beside it; start a new run without --resume")
    run = json.loads((partial / "run.json").read_text(encoding="utf-8"))
    if run.get("format") != FORMAT_VERSION:
        raise RobustlabError("the interrupted run was made by another robustlab version", thing=partial, fix="start over with --force")
    for key, value in (expect or {}).items():
        saved = run["config"].get(key, run.get(key))
        if key in ("train", "val", "test") and value is not None:
            value = str(Path(value).resolve())
        if isinstance(saved, float) and isinstance(value, (int, float)):
            same = math.isclose(saved, float(value), rel_tol=1e-9, abs_tol=1e-12)
        else:
            same = saved == value or str(saved) == str(value)
        if not same:
            raise RobustlabError(f"{key} is {value!r} but the interrupted run used {saved!r}", thing=partial, fix="resume with the same settings (or none: they are read from the checkpoint), or start over with --force")
    _lock(partial)
    spec_values = {k: v for k, v in run["detector_spec"].items() if v is not None}
    src = run.get("detector_source")
    spec = make_spec(spec_values, base_dir=Path(src).parent if src else Path.cwd(), source=Path(src) if src else None)
    if not spec.model.exists():
        raise RobustlabError("the input model of the interrupted run is gone", thing=spec.model, fix="restore it, or start over")
    if file_sha256(spec.model) != run["fingerprints"]["model"]:
        raise RobustlabError("the input model changed since the interrupted run started", thing=spec.model, fix="start over with --force")
    detector = load_detector(spec, trust_model=bool(run["trust_model"]))
    sets = _open_sets(run)
    for name, ds in (("train", sets[0]), ("val", sets[1])):
        if ds.fingerprint() != run["fingerprints"][name]:
            raise RobustlabError(f"the {name} set changed since the interrupted run started", thing=run[name], fix="start over with --force")
    return _run(partial, run, detector, sets, progress=progress, log=log, on_epoch_end=on_epoch_end)


def _stratified(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0x6A2D])
    if k >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    chosen = []
    for c in (0, 1):
        members = np.flatnonzero(labels == c)
        take = int(round(k * len(members) / len(labels)))
        take = min(len(members), max(1, take)) if len(members) else 0
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _run(
    partial: Path,
    run: dict[str, Any],
    source_detector: Any,
    sets: tuple[Any, Any, Any],
    *,
    progress: bool,
    log: Callable[[str], None],
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
) -> FinetuneResult:
    """Train (from the last checkpoint, if any), then write the outputs and rename into place."""
    from robustlab.detector.loading import load_detector

    config = FinetuneConfig.from_dict(run["config"])
    train_set, val_set, test_set = sets
    t_start = time.time()
    det = load_detector(source_detector.spec, trust_model=bool(run["trust_model"]))  # a private copy to train
    model = det.model
    original_flags = [(layer, layer.trainable) for layer in [model, *_leaf_layers(model)]]
    steps, chosen = prepare_training(det, config, train_set)
    optimizer = steps.optimizer
    positive = det.positive
    initial = _model_arrays(model)

    ckpts = _Checkpoints(partial)
    latest = ckpts.latest()
    best_arrays: list[np.ndarray] | None
    if latest is not None:
        state, best_file = ckpts.read_state(latest)
        _assign(model.variables, _load_npz(latest / "model.npz"), "weights", latest)
        _assign(optimizer.variables, _load_npz(latest / "optimizer.npz"), "optimizer state", latest)
        best_arrays = _load_npz(ckpts.dir / best_file)
        optimizer.learning_rate = state.lr
        log(f"robustlab adv-train: resuming after epoch {state.epoch} of {config.epochs} ({latest})")
    else:
        state = TrainState(lr=config.lr)
        best_arrays = initial
    h, w = det.input_size
    resize = det.spec.preprocessing
    bs = config.batch_size
    n_train = len(train_set)

    # the guard's validation batch: stratified, seeded, fixed for the whole run
    y_val_all = val_set.labels if positive == "fake" else 1 - val_set.labels
    guard_batch = None
    if config.guard:
        g_idx = _stratified(y_val_all, config.guard_size, config.seed)
        guard_batch = val_set.load_arrays((h, w), method=resize, indices=g_idx, batch_size=bs)
        if len(guard_batch.idx) == 0:
            guard_batch = None

    def guard() -> dict[str, float] | None:
        if guard_batch is None:
            return None
        y = (guard_batch.y if positive == "fake" else 1 - guard_batch.y).astype(np.int32)
        clean = fgsm = pgd = 0.0
        for s in range(0, len(y), bs):
            c, f, p = steps.guard_step(guard_batch.x[s : s + bs], y[s : s + bs], np.asarray([config.seed, 7_000_000 + s], np.int32))
            clean, fgsm, pgd = clean + float(c), fgsm + float(f), pgd + float(p)
        n = float(len(y))
        return {"clean": clean / n, "fgsm": fgsm / n, "pgd": pgd / n}

    if state.guard_baseline is None and config.guard:
        state.guard_baseline = guard()
        if state.guard_baseline:
            gb = state.guard_baseline
            log(f"robustlab adv-train: before training, guard batch ({len(guard_batch.idx)} val images): clean {gb['clean']:.1%}, FGSM {gb['fgsm']:.1%}, PGD {gb['pgd']:.1%} at eps={config.eps:.4g}")

    log(
        f"robustlab adv-train: {n_train} train / {len(val_set)} val images, {config.epochs} epoch(s), "
        f"ratio {config.ratio:g} {steps.train_attack_desc}, {chosen['parameters']} trainable parameters "
        f"({config.trainable}{', BatchNorm frozen' if chosen['frozen_batchnorm'] else ''}), {config.optimizer} lr {config.lr:g}"
    )
    while state.stopped is None and state.epoch < config.epochs:
        epoch = state.epoch + 1
        t0 = time.time()
        stats = steps.train_epoch(train_set, epoch, progress=progress)
        n_seen = stats["n"]
        train_seconds = time.time() - t0
        if n_seen == 0:
            raise RobustlabError("no training image could be read", thing=run["train"], fix="check the files (see the skipped list above)")

        # validation: clean and under the training attack
        v_loss = v_corr = a_loss = a_corr = v_n = 0.0
        for vb_no, vb in enumerate(val_set.batches((h, w), method=resize, batch_size=bs)):
            if len(vb.idx) == 0:
                continue
            y = (vb.y if positive == "fake" else 1 - vb.y).astype(np.int32)
            l1, c1, l2, c2 = steps.val_step(vb.x, y, np.asarray([config.seed, 5_000_000 + vb_no], np.int32))
            v_loss, v_corr, a_loss, a_corr, v_n = v_loss + float(l1), v_corr + float(c1), a_loss + float(l2), a_corr + float(c2), v_n + len(y)
        if v_n == 0:
            raise RobustlabError("no validation image could be read", thing=run["val"], fix="check the files (see the skipped list above)")
        row: dict[str, Any] = {
            "epoch": epoch,
            "lr": float(state.lr),
            "loss": stats["loss"],
            "accuracy": stats["accuracy"],
            "adv_share": stats["adv_share"],
            "val_loss": v_loss / v_n,
            "val_accuracy": v_corr / v_n,
            "val_adv_loss": a_loss / v_n,
            "val_adv_accuracy": a_corr / v_n,
        }
        row["val_mix_loss"] = (1 - config.ratio) * row["val_loss"] + config.ratio * row["val_adv_loss"]
        g = guard()
        reason = None
        if g is not None:
            row.update(guard_clean_accuracy=g["clean"], guard_fgsm_accuracy=g["fgsm"], guard_pgd_accuracy=g["pgd"])
            reason = guard_collapse(state.history, row, config.guard_drop)
        lr_before = state.lr
        events = schedule_step(state, row, config, collapse=reason)
        if state.lr != lr_before:
            optimizer.learning_rate = state.lr
        new_best = None
        if "best" in events:
            new_best = _model_arrays(model)
            best_arrays = new_best
        elif state.best_epoch == 0 and len(state.history) == 0:
            new_best = best_arrays  # no trained epoch is better yet: the checkpoint keeps the input weights
        row["event"] = " ".join(events)
        row["train_seconds"] = train_seconds
        row["seconds"] = time.time() - t0
        state.history.append(row)
        state.epoch = epoch
        state.seconds += row["seconds"]
        ckpts.save(state, model, optimizer, new_best)
        guard_text = f", guard FGSM {g['fgsm']:.1%} PGD {g['pgd']:.1%}" if g else ""
        log(
            f"robustlab adv-train: epoch {epoch}/{config.epochs}: loss {row['loss']:.4f} acc {row['accuracy']:.1%}, "
            f"val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.1%}, val_adv_acc {row['val_adv_accuracy']:.1%}"
            f"{guard_text} ({row['train_seconds']:.1f} s train, {row['seconds']:.1f} s total){' [' + row['event'] + ']' if row['event'] else ''}"
        )
        if state.stopped:
            log(f"robustlab adv-train: {state.stopped}; keeping epoch {state.best_epoch}")
        if on_epoch_end is not None:
            on_epoch_end(dict(row))

    # ---- the best epoch's weights, the new threshold, the outputs
    assert best_arrays is not None
    _assign(model.variables, best_arrays, "best weights", partial)
    for layer, flag in original_flags:
        layer.trainable = flag
    val_scores, val_y = [], []
    for vb in val_set.batches((h, w), method=resize, batch_size=bs):
        if len(vb.idx):
            val_scores.append(det.scores(vb.x))
            val_y.append(vb.y if positive == "fake" else 1 - vb.y)
    y_v, s_v = np.concatenate(val_y), np.concatenate(val_scores)
    try:
        threshold, threshold_note = pick_val_threshold(y_v, s_v, config.threshold_strategy, thing=run["val"])
    except RobustlabError as exc:  # e.g. a precision target the new model does not reach: keep the training
        threshold, threshold_note = pick_val_threshold(y_v, s_v, "max-f1", thing=run["val"])
        threshold_note = f"{threshold_note} (--threshold-strategy {config.threshold_strategy} failed: {exc.problem})"
        log(f"robustlab adv-train: warning: --threshold-strategy {config.threshold_strategy} failed on VAL ({exc.problem}); used max-f1")
    kept = f"epoch {state.best_epoch}" if state.best_epoch else f"epoch 0, the input weights (no epoch improved {config.monitor})"
    log(f"robustlab adv-train: kept {kept}; threshold {threshold:.4f} ({threshold_note})")
    return _finish(partial, run, config, state, det, source_detector, test_set, threshold, threshold_note, chosen, steps.train_attack_desc, time.time() - t_start, progress, log)


def _new_spec(det: Any, threshold: float, name: str) -> dict[str, Any]:
    """The NEW detector.yaml: the input's preprocessing, resolved, with the re-picked threshold."""
    spec = det.spec
    out: dict[str, Any] = {
        "name": name,
        "model": "model.keras",
        "input_size": list(det.input_size),
        "resize": str(spec.resize),
        "color": str(spec.color),
        "scale": str(spec.scale),
        "output": str(det.output),
        "classes": list(det.classes),
        "positive": det.positive,
        "threshold": round(float(threshold), 6),
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


def _finish(
    partial: Path,
    run: dict[str, Any],
    config: FinetuneConfig,
    state: TrainState,
    det: Any,
    source_detector: Any,
    test_set: Any,
    threshold: float,
    threshold_note: str,
    chosen: dict[str, Any],
    attack_desc: str,
    seconds: float,
    progress: bool,
    log: Callable[[str], None],
) -> FinetuneResult:
    from robustlab.detector.loading import load_detector
    from robustlab.evaluation.pipeline import EvaluationPlan
    from robustlab.evaluation.pipeline import run as run_plan
    from robustlab.runs import versions

    out = Path(run["out"])
    name = f"{source_detector.spec.name}-advtrained"
    # the model, its spec and the history (inside the partial folder, renamed as a whole below)
    model_tmp = partial / ".model.tmp.keras"
    det.model.save(model_tmp)
    os.replace(model_tmp, partial / "model.keras")
    spec_values = _new_spec(det, threshold, name)
    header = (
        f"# robustlab adv-train: {source_detector.spec.name} fine-tuned with {config.ratio:g} {config.attack} mixing at eps={config.eps:.5g}\n"
        f"# preprocessing copied from {source_detector.spec.source or source_detector.spec.model}; threshold re-picked on VAL\n"
    )
    atomic_write_text(partial / "detector.yaml", header + yaml.safe_dump(spec_values, sort_keys=False))
    _write_history(partial, state.history, state.best_epoch, state.stopped)

    # before / after on TEST (VAL when no --test): the same variants, seed and subset for both
    new_det = load_detector(partial / "detector.yaml", trust_model=bool(run["trust_model"]))
    variants = default_eval_variants(config.eps, run["eval"]["attacks"], run["eval"]["corruptions"])
    ba = partial / "before-after"
    shutil.rmtree(ba, ignore_errors=True)
    fraction = float(run["eval"]["fraction"])
    command = tuple(run["command"]) if run.get("command") else None

    def evaluated(detector: Any, where: Path, detector_info: "dict[str, Any] | None" = None) -> Any:
        plan = EvaluationPlan(detector, test_set, tuple(variants), fraction, where, True, seed=config.seed, batch_size=config.batch_size, progress=progress, command=command, config={"adv_train": run["out"]}, checks=_checks(detector, variants), detector_info=detector_info)
        return run_plan(plan).result

    log(f"robustlab adv-train: evaluating the input detector and the new one on {test_set.root} ({len(test_set)} images)")
    before = evaluated(source_detector, ba / "before")
    after_desc = new_det.describe()
    after_desc["spec"] = {**after_desc["spec"], "model": str(out / "model.keras")}
    after_desc["spec_file"] = str(out / "detector.yaml")
    after = evaluated(new_det, ba / "after", after_desc)
    comp = comparison_rows(before.rows, after.rows)
    summary = [
        f"Before: `{source_detector.spec.source or source_detector.spec.model}` (threshold {source_detector.threshold:g}).",
        f"After: `{out / 'detector.yaml'}` (threshold {threshold:.4f}, {threshold_note}); kept epoch {state.best_epoch} of {len(state.history)} trained.",
        f"Training: ratio {config.ratio:g} of each batch {attack_desc}; {config.optimizer} lr {config.lr:g}; trainable {config.trainable}.",
        f"Data: `{test_set.root}` ({len(test_set)} images); attacked subset fraction {float(run['eval']['fraction']):g}, seed {config.seed}.",
    ]
    if not run.get("test"):
        summary.append("**Optimistic**: no --test was given, so these rows are on VAL, where the kept epoch and the new threshold were picked. Evaluate on a held-out set before trusting them.")
    if state.stopped:
        summary.append(f"Stopped early: {state.stopped}.")
    atomic_write_text(ba / "comparison.md", comparison_markdown(comp, title=f"robustlab adv-train: {source_detector.spec.name} before / after", summary=summary))
    atomic_write_text(ba / "comparison.json", to_json({"rows": comp}))
    buf = io.StringIO()
    if comp:
        writer = csv.DictWriter(buf, fieldnames=list(comp[0].keys()), lineterminator="\n")
        writer.writeheader()
        for r in comp:
            writer.writerow({k: "" if v is None else v for k, v in r.items()})
    atomic_write_text(ba / "comparison.csv", buf.getvalue())

    info = {
        "command": run.get("command"),
        "config": run["config"],
        "train": run["train"],
        "val": run["val"],
        "test": run.get("test"),
        "detector_in": source_detector.describe(),
        "detector_out": str(out / "detector.yaml"),
        "trainable": chosen,
        "training_attack": attack_desc,
        "best_epoch": state.best_epoch,
        "epochs_trained": len(state.history),
        "stopped": state.stopped,
        "monitor": str(config.monitor),
        "best_value": state.best_value,
        "guard_baseline": state.guard_baseline,
        "threshold": threshold,
        "threshold_from": threshold_note,
        "history": state.history,
        "fingerprints": run["fingerprints"],
        "versions": versions(),
        "timings": {"train_seconds": round(state.seconds, 3), "this_session_seconds": round(seconds, 3)},
        "complete": True,
    }
    atomic_write_text(partial / "train.json", to_json(info))
    # publish: the folder is renamed into place, then the checkpoints, resume file and lock go
    old = None
    if out.exists():
        if any(out.iterdir()) and not run.get("force"):
            raise RobustlabError("appeared while adv-train was working", thing=out, fix=f"move it away and run `robustlab adv-train --resume {out}` again")
        old = out.parent / f".{out.name}.old-{os.getpid()}-{int(time.time())}"
        os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    for leftover in ("run.json", "LOCK"):
        (out / leftover).unlink(missing_ok=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    comp_out = json.loads((out / "before-after" / "comparison.json").read_text(encoding="utf-8"))["rows"]
    return FinetuneResult(out, state.history, state.best_epoch, state.stopped, threshold, threshold_note, comp_out, info)
