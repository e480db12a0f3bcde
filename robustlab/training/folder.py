"""Where a fine-tuning run lives: NEW under construction (a :class:`~robustlab.runs.RunFolder` with a
stable temporary name, so ``--resume`` finds it), its lock, and its resume record ``run.json``, checked
before anything is loaded from it.

``adv-train --out NEW`` builds NEW in ``.NEW.adv-train-partial`` beside it: ``run.json`` (what the
run was started with), ``LOCK`` (the working process's pid) and ``checkpoints/``. When training and
the before/after evaluation are done, :meth:`TrainingFolder.commit` drops the checkpoints and lock
and renames the folder into place through :meth:`RunFolder.commit` (``run.json`` complete, last).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from robustlab.errors import RobustlabError
from robustlab.runs import RunFolder, atomic_write_text, is_nonempty_dir, to_json, write_marker

PARTIAL_SUFFIX = ".adv-train-partial"
CHECKPOINTS = "checkpoints"
FORMAT_VERSION = 2  # 2: guard batch drawn by robustlab.sampling.stratified_subset; checked run.json


def partial_dir(out: "str | os.PathLike") -> Path:
    """Where an unfinished ``adv-train --out NEW`` lives: ``.NEW.adv-train-partial`` beside it."""
    out = Path(out).resolve()
    return out.parent / f".{out.name}{PARTIAL_SUFFIX}"


def lock(partial: Path) -> None:
    """Write this process's pid to ``partial/LOCK``; RobustlabError if another live process holds it."""
    lock_file = partial / "LOCK"
    if lock_file.exists():
        try:
            pid = int(lock_file.read_text().strip())
        except (ValueError, OSError):
            pid = 0
        alive = False
        if pid and pid != os.getpid():
            try:
                os.kill(pid, 0)
                alive = True
            except OSError:
                alive = False
        if alive:
            raise RobustlabError(f"another adv-train (pid {pid}) is working here", thing=partial, fix="wait for it to finish, or stop it first")
    atomic_write_text(lock_file, f"{os.getpid()}\n")


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both resolved)."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


class TrainingFolder(RunFolder):
    """NEW under construction, in the stable temporary folder :func:`partial_dir` (not a random one).

    The only place fine-tuning creates its output folder: RunFolder's checks of ``--out`` (exists
    and is not a folder, not empty without ``--force``) run here, for a new run and for a resume.
    ``resume=False`` starts over (an interrupted run for NEW is refused, or removed with ``force``);
    ``resume=True`` takes the existing one. ``inputs``: the files and folders the run reads (model,
    spec, TRAIN, VAL, TEST); an ``--out`` that is one of them or holds one is refused.
    """

    def __init__(self, out: "str | os.PathLike", *, force: bool = False, resume: bool = False, inputs: Sequence["str | os.PathLike"] = ()):
        super().__init__(out, force=force, inputs=inputs)  # refuses an --out that is, holds or lies inside an input
        shutil.rmtree(self.dir)  # RunFolder's random temporary folder: a resumable run needs a name it can find
        self.dir = partial_dir(self.final)
        if resume:
            return
        if self.dir.exists():
            if not force:
                raise RobustlabError(
                    "an interrupted adv-train for this --out exists",
                    thing=self.dir,
                    fix=f"continue it with `robustlab adv-train --resume {self.final}`, or pass --force to start over",
                )
            lock(self.dir)
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        write_marker(self.dir)  # the published NEW is a robustlab output folder (--force may replace it)
        lock(self.dir)

    def commit(self, run_info: dict[str, Any]) -> Path:
        """Drop the checkpoints and the lock, then publish (``run.json`` complete, rename into place).

        If NEW appeared meanwhile (and no ``--force``), nothing is dropped: ``--resume`` still works.
        """
        if is_nonempty_dir(self.final) and not self.force:
            raise RobustlabError("appeared while adv-train was working", thing=self.final, fix=f"move it away and run `robustlab adv-train --resume {self.final}` again")
        shutil.rmtree(self.dir / CHECKPOINTS, ignore_errors=True)
        (self.dir / "LOCK").unlink(missing_ok=True)
        return super().commit(run_info)

    def write_record(self, record: Mapping[str, Any]) -> None:
        """The resume record ``run.json`` (what the run was started with), written once at the start."""
        self.write_text("run.json", to_json(dict(record)))


# --------------------------------------------------------------------------- the resume record

_NONE = type(None)
_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "format": (int,),
    "out": (str,),
    "force": (bool,),
    "config": (dict,),
    "detector_spec": (dict,),
    "detector_source": (str, _NONE),
    "train": (str,),
    "val": (str,),
    "test": (str, _NONE),
    "classes": (str, _NONE),
    "eval": (dict,),
    "fingerprints": (dict,),
    "command": (list, _NONE),
}
_EVAL_TYPES: dict[str, tuple[type, ...]] = {"attacks": (list, _NONE), "corruptions": (list, _NONE), "fraction": (int, float)}
_FINGERPRINT_TYPES: dict[str, tuple[type, ...]] = {"train": (str,), "val": (str,), "model": (str,)}


def _check_block(block: Mapping[str, Any], types: Mapping[str, tuple[type, ...]], where: str, thing: Path) -> None:
    fix = "start over with --force (this interrupted run cannot be resumed)"
    missing = [k for k in types if k not in block]
    if missing:
        raise RobustlabError(f"not a complete adv-train checkpoint: {where}lacks {', '.join(missing)}", thing=thing, fix=fix)
    for key, allowed in types.items():
        value = block[key]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = " or ".join("null" if t is _NONE else t.__name__ for t in allowed)
            raise RobustlabError(f"not a valid adv-train checkpoint: {where}{key} is {type(value).__name__}, not {names}", thing=thing, fix=fix)


def read_record(partial: Path) -> dict[str, Any]:
    """``partial/run.json`` checked (JSON, keys, types, format) before anything is loaded from it.

    RobustlabError naming the file for one that is truncated, not JSON, lacks keys or has wrong
    types. Trust is never read from it: ``--trust-model`` comes from the command line only.
    """
    path = partial / "run.json"
    fix = "start over with --force (this interrupted run cannot be resumed)"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RobustlabError(f"cannot read the adv-train checkpoint ({exc.__class__.__name__})", thing=path, fix=fix) from None
    except ValueError as exc:
        raise RobustlabError(f"not a valid adv-train checkpoint: not JSON, or truncated ({exc})", thing=path, fix=fix) from None
    if not isinstance(record, dict):
        raise RobustlabError(f"not a valid adv-train checkpoint: a JSON {type(record).__name__}, not an object", thing=path, fix=fix)
    if record.get("format") != FORMAT_VERSION:
        raise RobustlabError("the interrupted run was made by another robustlab version", thing=path, fix="start over with --force")
    _check_block(record, _RECORD_TYPES, "", path)
    _check_block(record["eval"], _EVAL_TYPES, "eval.", path)
    _check_block(record["fingerprints"], _FINGERPRINT_TYPES, "fingerprints.", path)
    for key in ("attacks", "corruptions"):
        if record["eval"][key] is not None and not all(isinstance(s, str) for s in record["eval"][key]):
            raise RobustlabError(f"not a valid adv-train checkpoint: eval.{key} holds something other than specs", thing=path, fix=fix)
    return record
