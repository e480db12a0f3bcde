"""Run folders and atomic writes.

A run is built in a hidden sibling folder (``.RUN.tmp-<pid>-<n>``) and renamed into place when
complete, so an interrupted run never leaves a folder that looks whole. ``run.json`` carries
``"complete": true`` and is written last. An existing run folder is never replaced unless the
caller asks (``force=True``, ``--force`` at the CLI).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# what open() / mkdir() would give; mkstemp / mkdtemp alone give 0o600 / 0o700
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def atomic_write_bytes(path: "str | os.PathLike", data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path: "str | os.PathLike", text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_json(obj: Any) -> str:
    """JSON with numbers as numbers, NaN/inf as null, numpy scalars/arrays converted."""
    import math

    import numpy as np

    def clean(o: Any) -> Any:
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (np.floating, float)):
            f = float(o)
            return None if (math.isnan(f) or math.isinf(f)) else f
        if isinstance(o, (np.bool_,)):
            return bool(o)
        if isinstance(o, Path):
            return str(o)
        return o

    return json.dumps(clean(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


class RunFolder:
    """A run folder under construction. Use as a context manager; :meth:`commit` publishes it.

    ``path(name)`` gives where to write a file inside the (temporary) folder.
    """

    def __init__(self, out: "str | os.PathLike", *, force: bool = False):
        self.final = Path(out).resolve()
        self.force = force
        if self.final.exists() and not self.final.is_dir():
            raise RobustlabError("exists and is not a folder", thing=self.final, fix="choose another --out")
        if is_nonempty_dir(self.final) and not force:
            raise RobustlabError("already exists and is not empty", thing=self.final, fix="choose another --out, or pass --force to replace it")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.tmp-{os.getpid()}-", dir=self.final.parent))
        os.chmod(self.dir, _DIR_MODE)  # mkdtemp gives 0o700; a run folder is as readable as any folder
        self.started = time.time()
        self.committed = False

    def path(self, name: str) -> Path:
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path(name), text)

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, to_json(obj))

    def commit(self, run_info: dict[str, Any]) -> Path:
        """Write ``run.json`` (``complete: true``) last, then move the folder into place."""
        info = dict(run_info)
        info["complete"] = True
        self.write_json("run.json", info)
        old = None
        if self.final.exists():
            if is_nonempty_dir(self.final) and not self.force:
                raise RobustlabError("appeared while the run was working", thing=self.final, fix="choose another --out, or pass --force")
            old = self.final.parent / f".{self.final.name}.old-{os.getpid()}-{int(time.time())}"
            os.replace(self.final, old)
        os.replace(self.dir, self.final)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        if not self.committed:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            self.abort()


REQUIRED_RUN_FILES = ("run.json", "metrics.json", "metrics.csv", "metrics.md", "predictions.csv")


def read_run(run: "str | os.PathLike") -> dict[str, Any]:
    """Read a finished run folder: ``{"run": run.json, "rows": [...]}``; RobustlabError if incomplete."""
    folder = Path(run)
    if not folder.is_dir():
        raise RobustlabError("no such run folder", thing=folder, fix="give the --out folder of a finished robustlab run")
    missing = [f for f in REQUIRED_RUN_FILES if not (folder / f).exists()]
    if missing:
        raise RobustlabError(f"incomplete run folder: missing {', '.join(missing)}", thing=folder, fix="re-run the evaluation; an interrupted run is not reported")
    try:
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        rows = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["rows"]
    except (ValueError, KeyError, OSError) as exc:
        raise RobustlabError(f"unreadable run files ({exc.__class__.__name__})", thing=folder, fix="re-run the evaluation") from None
    if not info.get("complete"):
        raise RobustlabError("run.json does not mark the run complete", thing=folder, fix="re-run the evaluation")
    return {"run": info, "rows": rows}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("robustlab", "tensorflow", "keras", "tf-keras", "adversarial-robustness-toolbox", "numpy", "scikit-learn", "pillow", "opencv-python", "opencv-python-headless"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
