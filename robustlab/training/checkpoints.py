"""Checkpoints, resume, the learning-rate schedule and the collapse guard of a fine-tuning run.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from robustlab.errors import RobustlabError
from robustlab.runs import atomic_write_bytes, atomic_write_text, to_json
from robustlab.training.config import FinetuneConfig
from robustlab.training.folder import CHECKPOINTS

_START_OVER = "start over with --force (this interrupted run cannot be resumed)"
HISTORY_FIELDS = (
    "epoch",
    "lr",
    "loss",
    "accuracy",
    "adv_share",
    "val_loss",
    "val_accuracy",
    "val_adv_loss",
    "val_adv_accuracy",
    "val_mix_loss",
    "guard_clean_accuracy",
    "guard_fgsm_accuracy",
    "guard_pgd_accuracy",
    "event",
    "train_seconds",
    "seconds",
)


# --------------------------------------------------------------------------- state & checkpoints


@dataclass
class TrainState:
    """Schedule state after ``epoch`` complete epochs (saved in every checkpoint)."""

    epoch: int = 0
    lr: float = 0.0
    best_value: float | None = None
    best_epoch: int = 0
    wait: int = 0
    lr_wait: int = 0
    stopped: str | None = None  # why training ended early, or None
    history: list[dict[str, Any]] = field(default_factory=list)
    guard_baseline: dict[str, float] | None = None
    seconds: float = 0.0

    @property
    def rng_position(self) -> dict[str, Any]:
        return {"next_epoch": self.epoch, "keyed_by": "(seed, epoch, step)"}


def _npz_bytes(arrays: Sequence[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{f"v{i:05d}": a for i, a in enumerate(arrays)})
    return buf.getvalue()


def _load_npz(path: Path) -> list[np.ndarray]:
    """The arrays ``v00000, v00001, ...`` of a checkpoint ``.npz`` (never pickles); RobustlabError if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return [z[f"v{i:05d}"] for i in range(len(z.files))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise RobustlabError(f"unreadable checkpoint arrays ({exc.__class__.__name__})", thing=path, fix=_START_OVER) from None


def _model_arrays(model: Any) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in model.variables]


def _assign(variables: Sequence[Any], arrays: Sequence[np.ndarray], what: str, thing: Path) -> None:
    if len(variables) != len(arrays) or any(tuple(v.shape) != a.shape for v, a in zip(variables, arrays)):
        raise RobustlabError(f"the checkpoint's {what} do not match the model", thing=thing, fix="start over with --force (the input model changed since the checkpoint)")
    for v, a in zip(variables, arrays):
        v.assign(a)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f.relative_to(path).as_posix().encode())
            h.update(file_sha256(f).encode())
        return h.hexdigest()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Checkpoints:
    """``PARTIAL/checkpoints/epoch-NNNN/{state.json, model.npz, optimizer.npz}``, ``best-NNNN.npz``, ``LATEST``.

    Each checkpoint folder is written under a temporary name and renamed; ``LATEST`` (written
    atomically, last) names the newest complete one. A kill at any moment leaves the previous one.
    """

    def __init__(self, partial: Path):
        self.dir = partial / CHECKPOINTS
        self.dir.mkdir(parents=True, exist_ok=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder, or None; RobustlabError for a LATEST naming something else."""
        f = self.dir / "LATEST"
        if not f.exists():
            return None
        try:
            name = f.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RobustlabError(f"unreadable checkpoint pointer ({exc.__class__.__name__})", thing=f, fix=_START_OVER) from None
        if not re.fullmatch(r"epoch-\d{4}", name):
            raise RobustlabError(f"the checkpoint pointer names {name[:40]!r}, not an epoch-NNNN folder", thing=f, fix=_START_OVER)
        p = self.dir / name
        return p if (p / "state.json").exists() else None

    def save(self, state: TrainState, model: Any, optimizer: Any, best_arrays: list[np.ndarray] | None) -> Path:
        name = f"epoch-{state.epoch:04d}"
        best_name = f"best-{state.best_epoch:04d}.npz"
        if best_arrays is not None:
            atomic_write_bytes(self.dir / best_name, _npz_bytes(best_arrays))
        tmp = self.dir / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        atomic_write_bytes(tmp / "model.npz", _npz_bytes(_model_arrays(model)))
        atomic_write_bytes(tmp / "optimizer.npz", _npz_bytes([np.asarray(v.numpy()) for v in optimizer.variables]))
        payload = asdict(state)
        payload["best_file"] = best_name
        payload["rng_position"] = state.rng_position
        payload["variables"] = [[v.path, list(v.shape)] for v in model.variables]
        atomic_write_text(tmp / "state.json", to_json(payload))
        final = self.dir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(self.dir / "LATEST", name + "\n")
        for old in self.dir.iterdir():  # keep the newest checkpoint and the best weights only
            if old.name in (name, best_name, "LATEST"):
                continue
            if old.name.startswith("epoch-") or old.name.startswith("best-"):
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        return final

    @staticmethod
    def read_state(ckpt: Path) -> tuple[TrainState, str]:
        """``(state, name of the best-weights file)`` from ``ckpt/state.json``, checked; RobustlabError if bad."""
        path = ckpt / "state.json"
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RobustlabError(f"unreadable checkpoint state ({exc.__class__.__name__})", thing=path, fix=_START_OVER) from None
        types = {"epoch": int, "lr": (int, float), "best_epoch": int, "wait": int, "lr_wait": int, "history": list, "seconds": (int, float), "best_file": str}
        bad = [k for k, t in types.items() if not isinstance(payload, dict) or not isinstance(payload.get(k), t) or isinstance(payload.get(k), bool)]
        if bad or not re.fullmatch(r"best-\d{4}\.npz", payload["best_file"]) or not math.isfinite(float(payload["lr"])):
            raise RobustlabError(f"not a valid checkpoint state (bad or missing: {', '.join(bad) or 'best_file, lr'})", thing=path, fix=_START_OVER)
        best_file = payload.pop("best_file")
        known = set(TrainState.__dataclass_fields__)
        return TrainState(**{k: v for k, v in payload.items() if k in known}), best_file


def guard_collapse(history: Sequence[Mapping[str, Any]], row: Mapping[str, Any], drop: float, fgsm_slack: float = 0.02) -> str | None:
    """Catastrophic overfitting: why ``row`` (this epoch) shows it, or None.

    It shows when the guard's PGD accuracy fell by more than ``drop`` below the best PGD accuracy
    of an earlier (not collapsed) epoch while FGSM accuracy held or climbed (within
    ``fgsm_slack``) against that epoch: the model has learned to mask FGSM's gradient, not to resist.
    """
    prior = [r for r in history if r.get("guard_pgd_accuracy") is not None and "collapse" not in (r.get("event") or "")]
    if not prior or row.get("guard_pgd_accuracy") is None:
        return None
    ref = max(prior, key=lambda r: r["guard_pgd_accuracy"])
    pgd, fgsm = row["guard_pgd_accuracy"], row["guard_fgsm_accuracy"]
    if pgd < ref["guard_pgd_accuracy"] - drop and fgsm >= ref["guard_fgsm_accuracy"] - fgsm_slack:
        return (
            f"catastrophic overfitting at epoch {row['epoch']}: guard PGD accuracy fell from {ref['guard_pgd_accuracy']:.1%} "
            f"(epoch {ref['epoch']}) to {pgd:.1%} while FGSM accuracy went {ref['guard_fgsm_accuracy']:.1%} -> {fgsm:.1%}"
        )
    return None


def schedule_step(state: "TrainState", row: Mapping[str, Any], config: FinetuneConfig, *, collapse: str | None = None) -> list[str]:
    """Best epoch, early stopping and reduce-on-plateau after one epoch (as Keras' callbacks).

    Updates ``state`` (``best_value``, ``best_epoch``, ``wait``, ``lr_wait``, ``lr``, ``stopped``)
    from ``row[config.monitor]`` (lower is better; NaN never improves) and returns the epoch's
    events (``best``, ``lr->X``, ``early-stop``, ``collapse``). A collapsed epoch never becomes
    the best one and stops training.
    """
    epoch = int(row["epoch"])
    monitor = str(config.monitor)
    events: list[str] = []
    if collapse:
        state.stopped = collapse
        return ["collapse"]
    value = float(row[monitor])
    if not math.isnan(value) and (state.best_value is None or value < state.best_value):
        state.best_value, state.best_epoch, state.wait, state.lr_wait = value, epoch, 0, 0
        return ["best"]
    state.wait += 1
    state.lr_wait += 1
    if config.reduce_lr_patience and state.lr_wait >= config.reduce_lr_patience and state.lr > config.min_lr:
        state.lr = max(config.min_lr, state.lr * config.reduce_lr_factor)
        state.lr_wait = 0
        events.append(f"lr->{state.lr:.3g}")
    if config.patience and state.wait >= config.patience:
        best = "none" if state.best_value is None else f"{state.best_value:.4f} at epoch {state.best_epoch}"
        state.stopped = f"early stopping at epoch {epoch}: {monitor} did not improve for {config.patience} epoch(s) (best {best})"
        events.append("early-stop")
    return events
