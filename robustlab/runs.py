"""Run folders and atomic writes.

A run is built in a hidden sibling folder (``.RUN.tmp-<pid>-<random>``) and renamed into place
when complete, so an interrupted run never leaves a folder that looks whole. ``run.json`` carries
``"complete": true`` and the list of the run's files, and is written last, after checking that
every listed file is there.

Guards (all checked in :class:`RunFolder`'s constructor, before any long work):

* ``--force`` only replaces a folder robustlab wrote: one holding the :data:`MARKER` file
  (``.robustlab-run``) that every run folder gets when it is created.
* ``--out`` may never be, hold or lie inside an input (``inputs=``: data sets, detectors, paths):
  ``--out DATA`` would delete the images, ``--out DATA/FAKE/run1`` would add the run's PNGs to the
  next evaluation of DATA.
* the folder that will hold ``--out`` must be writable (a temporary sibling is created at once);
  a write failure later (a full disk) is a :class:`WriteFailed` (exit 2) naming the file and disk.
* stale temporary siblings left by a killed run (``kill -9``) of *this* machine whose process is
  gone are removed, when they carry the marker; anything else is only reported.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from robustlab.errors import RobustlabError

log = logging.getLogger("robustlab")

MARKER = ".robustlab-run"
"""The file every robustlab run/output folder holds; ``--force`` replaces only folders that have it."""

OWNER = ".robustlab-owner"
"""In a temporary run folder only: the pid and host building it (for stale-temporary cleanup)."""

STALE_AFTER_SECONDS = 60.0
"""A temporary sibling is only removed when its process is gone and it is at least this old."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# what open() / mkdir() would give; mkstemp / mkdtemp alone give 0o600 / 0o700
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


class WriteFailed(RobustlabError, OSError):
    """Writing an output file failed (full disk, read-only file system, quota...): exit 2."""


def _disk_of(path: Path) -> str:
    """The mount point holding ``path`` (its nearest existing parent), for messages."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p)


def write_failed(path: "str | os.PathLike", exc: OSError) -> WriteFailed:
    """A one-line :class:`WriteFailed` for ``exc`` raised while writing ``path``."""
    reason = exc.strerror or exc.__class__.__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = f"free space on the disk {_disk_of(Path(path))} (or raise the quota), or choose an --out on another disk"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"choose an --out in a folder you can write (disk {_disk_of(Path(path))})"
    else:
        fix = f"check the disk {_disk_of(Path(path))}, or choose another --out"
    return WriteFailed(f"cannot write ({reason})", thing=path, fix=fix)


def atomic_write_bytes(path: "str | os.PathLike", data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Any OS-level failure (full disk, read-only folder) is a :class:`WriteFailed` naming the file
    and the disk; no temporary file is left behind.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        if isinstance(exc, WriteFailed):
            raise
        raise write_failed(path, exc) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def _unlink_quietly(tmp: "str | None") -> None:
    if tmp is None:
        return
    try:
        os.unlink(tmp)
    except OSError:
        pass


def atomic_write_text(path: "str | os.PathLike", text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` as UTF-8 (undecodable file names kept as surrogates)."""
    return atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def to_json(obj: Any) -> str:
    """JSON with numbers as numbers, NaN/inf as null, numpy scalars/arrays converted."""
    import math

    import numpy as np

    def clean(o: Any) -> Any:
        if isinstance(o, dict):
            return {clean_str(str(k)): clean(v) for k, v in o.items()}
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
            return clean_str(str(o))
        if isinstance(o, str):
            return clean_str(o)
        return o

    return json.dumps(clean(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def clean_str(text: str) -> str:
    """``text`` with undecodable bytes of a file name (surrogate escapes) as ``\\xNN``: valid UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def is_run_folder(path: "str | os.PathLike") -> bool:
    """Whether ``path`` is a folder robustlab wrote (it holds the :data:`MARKER` regular file)."""
    marker = Path(path) / MARKER
    return marker.is_file() and not marker.is_symlink()


MARKER_TEXT = "robustlab run folder: written by robustlab; `--force` may replace this folder\n"


def write_marker(folder: "str | os.PathLike") -> Path:
    """Mark ``folder`` as written by robustlab (so ``--force`` may replace it later). The content
    is constant, so the same command and seed still give byte-identical folders."""
    return atomic_write_text(Path(folder) / MARKER, MARKER_TEXT)


def _write_owner(folder: Path) -> Path:
    """Who is building the temporary ``folder`` (pid, host, time): removed when it is published."""
    text = json.dumps({"robustlab": "temporary run folder", "pid": os.getpid(), "host": socket.gethostname(), "created": time.time()}) + "\n"
    return atomic_write_text(folder / OWNER, text)


# --------------------------------------------------------------------------- inputs


def input_paths(inputs: Iterable[Any]) -> list[tuple[Path, bool]]:
    """``[(resolved path, is_container)]`` for what a command reads.

    Each item may be a path (``str`` / ``os.PathLike``; a folder is a container), ``None``
    (ignored), an object with ``input_paths()`` (a :class:`robustlab.data.Dataset`), a detector or
    detector spec (its model, weights, spec file and label encoder; a SavedModel folder is a
    container), or a threshold selection (its validation set's root).
    """
    out: list[tuple[Path, bool]] = []

    def add(p: Any) -> None:
        if p is None or str(p) == "":
            return
        path = Path(os.path.realpath(os.fspath(p)))
        out.append((path, path.is_dir()))

    for item in inputs:
        if item is None:
            continue
        if isinstance(item, (str, os.PathLike)):
            add(item)
        elif hasattr(item, "input_paths"):
            out.extend(item.input_paths())
        elif hasattr(item, "spec") and hasattr(item.spec, "model"):
            out.extend(input_paths([item.spec]))
        elif hasattr(item, "model") and hasattr(item, "source"):
            for attr in ("model", "weights", "source", "label_encoder"):
                v = getattr(item, attr, None)
                if isinstance(v, (str, os.PathLike)):
                    add(v)
        elif isinstance(getattr(item, "val", None), dict):
            add(item.val.get("root"))
        else:
            raise TypeError(f"RunFolder inputs: cannot tell the paths of {item!r}")
    return out


def check_out(out: "str | os.PathLike", *, force: bool = False, inputs: Iterable[Any] = ()) -> Path:
    """The resolved ``out``, after refusing (exit 2) an ``--out`` that must not be written.

    Refused: an out that is not a folder; one that is, holds or lies inside a folder input, or is
    or holds a file input; one whose folder is not writable; an existing non-empty folder without
    ``force``; with ``force``, one that robustlab did not write (no :data:`MARKER`). Cheap: call
    it before the long work (RunFolder calls it again and then proves writability with a real
    temporary folder).
    """
    final = Path(os.path.realpath(os.fspath(out)))
    existing = final.parent
    while not _exists(existing) and existing != existing.parent:
        existing = existing.parent
    limit = _name_max(existing)
    for part in final.relative_to(existing).parts if final != existing else ():
        if len(part.encode("utf-8", "surrogateescape")) > limit:
            raise RobustlabError(f"the folder name {part[:40]}... is too long for this file system ({limit} bytes at most)", thing=final.parent, fix="choose a shorter --out name")
    fix_inputs = "choose an --out outside the inputs (a new folder beside them)"
    for path, container in input_paths(inputs):
        if final == path:
            raise RobustlabError(f"--out is an input ({'folder' if container else 'file'} the command reads)", thing=final, fix=fix_inputs)
        if final in path.parents:
            raise RobustlabError(f"--out holds an input ({path})", thing=final, fix=fix_inputs)
        if container and path in final.parents:
            raise RobustlabError(f"--out lies inside an input folder ({path}); its files would be read as inputs next time", thing=final, fix=fix_inputs)
    if final.exists() and not final.is_dir():
        raise RobustlabError("exists and is not a folder", thing=final, fix="choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RobustlabError(f"cannot write in {existing} (no write permission)", thing=final, fix="choose an --out in a folder you can write")
    if is_nonempty_dir(final):
        if not force:
            raise RobustlabError("already exists and is not empty", thing=final, fix="choose another --out, or pass --force to replace it")
        if not is_run_folder(final):
            raise RobustlabError(
                f"is not a robustlab run folder (no {MARKER} file); --force only replaces folders robustlab wrote",
                thing=final,
                fix="move it away or choose another --out",
            )
    return final


# --------------------------------------------------------------------------- temporaries


def _exists(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _sibling_stem(final: Path) -> str:
    """The hidden stem of ``final``'s temporary siblings: ``.NAME``, shortened deterministically
    (``.<first chars>~<hash>``) when ``NAME`` is too long for a sibling name on this file system."""
    name = final.name
    limit = _name_max(final.parent if final.parent.exists() else Path(_disk_of(final))) - 40
    if len(name.encode("utf-8", "surrogateescape")) <= limit:
        return f".{name}"
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    head = name.encode("utf-8", "surrogateescape")[: max(1, limit - 14)].decode("utf-8", "ignore")
    return f".{head}~{digest}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def _stale_temporaries(final: Path) -> Iterator[tuple[Path, bool]]:
    """``(path, removable)`` for each temporary sibling of ``final`` (``.tmp-`` and ``.old-``).

    Removable: it holds robustlab's marker and owner file, was made on this host by a process that
    is gone, and is older than :data:`STALE_AFTER_SECONDS`.
    """
    stem = _sibling_stem(final)
    try:
        siblings = [p for p in final.parent.iterdir() if p.name.startswith(f"{stem}.tmp-") or p.name.startswith(f"{stem}.old-")]
    except OSError:
        return
    host = socket.gethostname()
    for p in sorted(siblings):
        if p.is_symlink() or not p.is_dir():
            continue
        removable = False
        try:
            if not is_run_folder(p):
                raise ValueError("no marker")
            if ".old-" in p.name:  # a replaced run whose removal was interrupted: .NAME.old-PID-TIME
                pid, same_host, since = int(p.name.rsplit("-", 2)[-2]), True, (p / MARKER).stat().st_mtime
            else:
                owner = json.loads((p / OWNER).read_text(encoding="utf-8"))
                pid, same_host, since = int(owner["pid"]), owner.get("host") == host, (p / OWNER).stat().st_mtime
            removable = same_host and not _pid_alive(pid) and time.time() - since >= STALE_AFTER_SECONDS
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            removable = False
        yield p, removable


def clean_stale_temporaries(final: "str | os.PathLike") -> list[Path]:
    """Remove robustlab's own stale temporary siblings of ``final``; report (stderr) the others.

    Returns the folders that were removed.
    """
    import sys

    removed = []
    for p, removable in _stale_temporaries(Path(final)):
        if removable:
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                removed.append(p)
                log.info("removed %s, left by an interrupted robustlab run", p)
                continue
        print(f"robustlab: note: {p} is a temporary folder of another (running or interrupted) run; remove it once no robustlab run is using it", file=sys.stderr)
    return removed


# --------------------------------------------------------------------------- run folders


class RunFolder:
    """A run folder under construction. Use as a context manager; :meth:`commit` publishes it.

    ``RunFolder(out, force=False, inputs=(detector, dataset, val_path, ...))`` refuses (exit 2,
    before any work) an ``out`` that :func:`check_out` refuses, or whose parent is not writable.
    ``path(name)`` gives where to write a file inside the (temporary) folder.
    """

    def __init__(self, out: "str | os.PathLike", *, force: bool = False, inputs: Iterable[Any] = ()):
        self.final = check_out(out, force=force, inputs=inputs)
        self.force = force
        parent = self.final.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_failed(parent, exc) from None
        clean_stale_temporaries(self.final)
        self._stem = _sibling_stem(self.final)
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=f"{self._stem}.tmp-{os.getpid()}-", dir=parent))
        except OSError as exc:
            raise write_failed(parent, exc) from None
        try:
            os.chmod(self.dir, _DIR_MODE)  # mkdtemp gives 0o700; a run folder is as readable as any folder
            write_marker(self.dir)
            _write_owner(self.dir)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.started = time.time()
        self.committed = False

    def path(self, name: str) -> Path:
        p = self.dir / name
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_failed(p.parent, exc) from None
        return p

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path(name), text)

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, to_json(obj))

    def listed_files(self) -> list[str]:
        """The run's top-level files (what ``run.json`` lists as ``files``), run.json excluded."""
        return sorted(p.name for p in self.dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "run.json")

    def commit(self, run_info: dict[str, Any], *, required: Iterable[str] = ()) -> Path:
        """Check the files, write ``run.json`` (``complete: true``) last, move the folder into place.

        ``required``: top-level files the run must have (besides what it wrote); a run that wrote
        ``metrics.json`` must also have every file of :data:`REQUIRED_RUN_FILES`. Refused (exit 2)
        when one is missing.
        """
        files = self.listed_files()
        need = set(required)
        if "metrics.json" in files:
            need.update(f for f in REQUIRED_RUN_FILES if f != "run.json")
        missing = sorted(n for n in need if n not in files)
        if missing:
            raise RobustlabError(f"the run is incomplete ({', '.join(missing)} missing)", thing=self.final, fix=f"check the disk {_disk_of(self.dir)} and run again")
        (self.dir / OWNER).unlink(missing_ok=True)
        info = dict(run_info)
        info["files"] = files
        info["complete"] = True
        self.write_json("run.json", info)
        old = None
        try:
            if self.final.exists():
                if is_nonempty_dir(self.final) and not (self.force and is_run_folder(self.final)):
                    raise RobustlabError("appeared while the run was working", thing=self.final, fix="choose another --out, or pass --force (it replaces only robustlab run folders)")
                old = self.final.parent / f"{self._stem}.old-{os.getpid()}-{int(time.time())}"
                os.replace(self.final, old)
            os.replace(self.dir, self.final)
        except OSError as exc:
            if old is not None and not self.final.exists():
                os.replace(old, self.final)
            raise write_failed(self.final, exc) from None
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
REPORT_FILES = frozenset({"report.html", "report.md", "report.json", "junit.xml"})
"""Reports drawn from a run's data files; ``robustlab report RUN`` writes them again when gone."""


def read_run(run: "str | os.PathLike") -> dict[str, Any]:
    """Read a finished run folder: ``{"run": run.json, "rows": [...]}``; RobustlabError if incomplete.

    ``run.json`` must be a JSON object marking the run complete, ``metrics.json`` an object with a
    ``rows`` list, and every data file run.json lists must exist (reports, :data:`REPORT_FILES`,
    can be written again from the data files).
    """
    folder = Path(run)
    if not folder.is_dir():
        raise RobustlabError("no such run folder", thing=folder, fix="give the --out folder of a finished robustlab run")
    missing = [f for f in REQUIRED_RUN_FILES if not (folder / f).is_file()]
    if missing:
        raise RobustlabError(f"incomplete run folder: missing {', '.join(missing)}", thing=folder, fix="re-run the evaluation; an interrupted run is not reported")
    try:
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise RobustlabError(f"unreadable run files ({exc.__class__.__name__})", thing=folder, fix="re-run the evaluation") from None
    if not isinstance(info, dict):
        raise RobustlabError(f"run.json is a JSON {type(info).__name__}, not an object", thing=folder / "run.json", fix="re-run the evaluation; run.json is written by robustlab")
    if not isinstance(metrics, dict) or not isinstance(metrics.get("rows"), list):
        got = f"a JSON {type(metrics).__name__}" if not isinstance(metrics, dict) else "an object without a rows list"
        raise RobustlabError(f"metrics.json is {got}, not {{\"rows\": [...]}}", thing=folder / "metrics.json", fix="re-run the evaluation with this robustlab")
    if not info.get("complete"):
        raise RobustlabError("run.json does not mark the run complete", thing=folder, fix="re-run the evaluation")
    listed = info.get("files")
    if isinstance(listed, list):
        gone = [str(f) for f in listed if str(f) not in REPORT_FILES and not (folder / str(f)).is_file()]
        if gone:
            raise RobustlabError(f"incomplete run folder: run.json lists {', '.join(gone[:4])} but it is missing", thing=folder, fix="re-run the evaluation")
    return {"run": info, "rows": metrics["rows"]}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("robustlab", "tensorflow", "keras", "tf-keras", "adversarial-robustness-toolbox", "numpy", "scikit-learn", "pillow", "opencv-python", "opencv-python-headless"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
