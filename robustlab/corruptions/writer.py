"""robustlab corrupt: corrupted copies of a data set, in the same layout as the input.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from robustlab.corruptions.functions import (
    MIN_SIDE,
    SMALL_MAX_SIDE,
    ImageTooSmall,
    check_size,
    corrupt,
    image_seed,
    is_small,
    known,
    parameters,
)
from robustlab.corruptions.variant import CorruptionVariant
from robustlab.errors import RobustlabError

NAME_MAX = 255  # bytes in one file-name component (ext4, APFS, NTFS in UTF-16 units: no less)
BATCH = 64  # images per thread-pool round (the progress bar moves once a round)

# --------------------------------------------------------------------------- output file names


def variant_folder(name: str, severity: int) -> str:
    """Relative folder of one corruption and severity inside ``robustlab corrupt --out DIR``."""
    return f"{name}/severity-{severity}"


def shown_name(path: str) -> str:
    """``path`` printable and UTF-8 encodable: bytes that are not UTF-8 (a name Python decoded with
    surrogateescape) are shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace") if _is_odd(path) else path


def _is_odd(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _fits(component: str) -> bool:
    return len(os.fsencode(component)) <= NAME_MAX


def _tagged(rel: str, original: str) -> str:
    """``rel`` with a tag from ``original`` before ``.png`` (``dir/stem~1a2b3c4d.png``), its stem
    cut so the file name fits in NAME_MAX bytes. Deterministic: the tag hashes the input path."""
    tag = "~" + hashlib.sha1(os.fsencode(original)).hexdigest()[:8] + ".png"
    folder, base = posixpath.split(rel)
    stem = base[: -len(".png")] if base.lower().endswith(".png") else base
    room = NAME_MAX - len(tag)
    raw = os.fsencode(stem)[:room]
    stem = os.fsdecode(raw)
    while not _fits(stem + tag):  # a cut inside a multi-byte character decodes to more bytes
        raw = raw[:-1]
        stem = os.fsdecode(raw)
    return posixpath.join(folder, stem + tag)


def _raw_relpaths(ds: Any) -> list[str]:
    """A class-folder data set's relative paths as the file system has them (``ds.paths`` shows
    bytes that are not UTF-8 as ``\\xNN`` text; the copies keep the original bytes)."""
    return [ds.source(i).relative_to(ds.root).as_posix() for i in range(len(ds))]


def _png_names(paths: Sequence[str], *, escape_prefix: str | None = None) -> list[str]:
    """Output file names (posix, relative): same path, ``.png`` suffix; collisions keep the old suffix.

    ``a/b.jpg`` -> ``a/b.png`` unless another input also maps there (file names compared without
    case), then ``a/b.jpg.png``. A name that still collides, or whose last part would exceed
    NAME_MAX bytes, becomes ``a/<stem cut to fit>~<hash of the input path>.png``: deterministic,
    whatever the order of the inputs. With ``escape_prefix``, absolute paths and paths leaving
    their folder (``..``) become ``PREFIX/000123_name.png`` (manifests may point anywhere).
    """
    rels = []
    for i, p in enumerate(paths):
        p = str(p).replace("\\", "/")
        norm = posixpath.normpath(p)
        if escape_prefix is not None and (posixpath.isabs(norm) or norm == ".." or norm.startswith("../") or re.match(r"^[A-Za-z]:", norm)):
            norm = f"{escape_prefix}/{i:06d}_{posixpath.basename(norm)}"
        rels.append(norm)
    candidates = [r if r.lower().endswith(".png") else posixpath.splitext(r)[0] + ".png" for r in rels]
    counts: dict[str, int] = {}
    for c in candidates:
        counts[c.lower()] = counts.get(c.lower(), 0) + 1
    names = [c if counts[c.lower()] == 1 or r == c else r + ".png" for r, c in zip(rels, candidates)]
    taken: dict[str, int] = {}
    for n in names:
        taken[n.lower()] = taken.get(n.lower(), 0) + 1
    out = []
    for r, n in zip(rels, names):
        if (taken[n.lower()] > 1 and r != n) or not _fits(posixpath.basename(n)):  # an input keeps its own name
            n = _tagged(n, r)
        out.append(n)
    return _unique(out, rels)


def _unique(names: list[str], rels: list[str]) -> list[str]:
    """``names`` made unique (without case) in the rare case a tagged name met another input's:
    the first by input path keeps its name, the others get tags from ``path#k``."""
    seen: set[str] = set()
    out = list(names)
    for i in sorted(range(len(names)), key=lambda j: rels[j]):
        k = 0
        while out[i].lower() in seen:
            k += 1
            out[i] = _tagged(names[i], f"{rels[i]}#{k}")
        seen.add(out[i].lower())
    return out


def _save_png(path: Any, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="RGB").save(path, format="PNG", compress_level=1)


# --------------------------------------------------------------------------- corrupted copies of a data set


@dataclass
class _Job:
    """One ``corrupt_dataset`` call: the data set, where its copies go, and what happened to each image."""

    ds: Any  # robustlab.data.Dataset
    folder: Any  # robustlab.runs.RunFolder
    corruptions: Sequence[CorruptionVariant]
    seed: int
    names: list[str]  # output file name of each image (folder and manifest layouts)
    layout_prefix: str  # "SPLIT/" for a split root, else ""
    status: list[str] = field(default_factory=list)  # ok | skipped | small, one per image
    small_table: list[bool] = field(default_factory=list)  # the image uses the CIFAR-10-C table
    reasons: dict[str, str] = field(default_factory=dict)  # path -> why it was skipped

    def __post_init__(self) -> None:
        n = len(self.ds)
        self.status = ["?"] * n
        self.small_table = [False] * n

    @property
    def ok(self) -> list[int]:
        return [i for i, s in enumerate(self.status) if s == "ok"]

    def read(self, i: int) -> np.ndarray | None:
        """Image ``i`` as uint8 (H, W, 3) at its own size, or None (skipped: unreadable or too small)."""
        from robustlab.data import ImageDecodeError

        ds = self.ds
        try:
            img = ds.read(i, None)
            check_size(img.shape)
        except (ImageDecodeError, ImageTooSmall) as exc:
            self.status[i] = "small" if isinstance(exc, ImageTooSmall) else "skipped"
            self.reasons[ds.paths[i]] = str(exc)
            if self.status[i] == "skipped":
                ds.skipped[ds.paths[i]] = str(exc)
            print(f"robustlab: skipped {shown_name(str(ds.source(i) or ds.paths[i]))}: {exc}", file=sys.stderr)
            return None
        self.status[i] = "ok"
        self.small_table[i] = is_small(img.shape)
        return img

    def corrupted(self, image: np.ndarray, v: CorruptionVariant, i: int) -> np.ndarray:
        return corrupt(image, v.name, v.severity, image_seed(self.seed, v.name, v.severity, i))

    def write_file(self, i: int) -> None:
        """Every corrupted copy of image ``i`` as a PNG (folder and manifest layouts)."""
        img = self.read(i)
        if img is None:
            return
        for v in self.corruptions:
            _save_png(self.folder.path(f"{variant_folder(v.name, v.severity)}/{self.layout_prefix}{self.names[i]}"), self.corrupted(img, v, i))


def _write_files(job: _Job, pool: ThreadPoolExecutor, bar: Any) -> None:
    n = len(job.ds)
    for s in range(0, n, BATCH):
        ids = range(s, min(n, s + BATCH))
        list(pool.map(job.write_file, ids))
        if bar is not None:
            bar.update(len(ids) * len(job.corruptions))


def _write_npz(job: _Job, pool: ThreadPoolExecutor, bar: Any, npz_name: str) -> None:
    """One ``.npz`` per corruption: ``x`` the corrupted readable images, ``y`` their labels."""
    n = len(job.ds)
    images = [job.read(i) for i in range(n)]
    ok = job.ok
    for v in job.corruptions:
        if not ok:
            break
        x = np.empty((len(ok),) + images[ok[0]].shape, np.uint8)

        def fill(k: int, v: CorruptionVariant = v, x: np.ndarray = x) -> None:
            x[k] = job.corrupted(images[ok[k]], v, ok[k])

        list(pool.map(fill, range(len(ok))))
        with open(job.folder.path(f"{variant_folder(v.name, v.severity)}/{npz_name}"), "wb") as fh:
            np.savez(fh, x=x, y=job.ds.labels[ok].astype(np.int64))
        del x
        if bar is not None:
            bar.update(n)


def _check_usable(job: _Job, source: Path) -> list[int]:
    """The images written; RobustlabError when none, or when a class has none left."""
    ok = job.ok
    if not ok:
        if "small" in job.status:
            raise RobustlabError(
                f"all {job.status.count('small')} readable images are too small for the corruptions (under {MIN_SIDE} px a side)",
                thing=source,
                fix=f"use images of at least {MIN_SIDE}x{MIN_SIDE} px",
            )
        raise RobustlabError("no image could be read", thing=source, fix="check the files (see the skipped list above)")
    labels = job.ds.labels[ok]
    missing = [c for c, lab in (("real", 0), ("fake", 1)) if not (labels == lab).any()]
    if missing:
        raise RobustlabError(
            f"after skipping {len(job.ds) - len(ok)} unreadable or too-small images no {missing[0]} image is left",
            thing=source,
            fix="the corrupted copies would not be a valid data set; check the skipped images",
        )
    return ok


def _write_manifests(job: _Job, ok: list[int], csv_name: str) -> None:
    """The manifest CSV (``path,label``) of every corrupted copy."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label"])
    for i in ok:
        w.writerow([job.names[i], "fake" if job.ds.labels[i] == 1 else "real"])
    for v in job.corruptions:
        job.folder.write_text(f"{variant_folder(v.name, v.severity)}/{csv_name}", buf.getvalue())


def _sets(job: _Job, ok: list[int], source: Path, table_counts: dict[str, int]) -> list[dict[str, Any]]:
    """One ``run.json`` record per corruption and severity: where its data set is and what it used."""
    ds = job.ds
    sets = []
    for v in job.corruptions:
        rel = variant_folder(v.name, v.severity)
        target = rel if ds.kind == "folders" else f"{rel}/{source.name}"
        params = {}
        if table_counts["cifar10-c"]:
            params["cifar10-c"] = parameters(v.name, v.severity, (SMALL_MAX_SIDE, SMALL_MAX_SIDE))
        if table_counts["imagenet-c"]:
            params["imagenet-c"] = parameters(v.name, v.severity, (SMALL_MAX_SIDE + 1, SMALL_MAX_SIDE + 1))
        sets.append(
            {
                "corruption": v.name,
                "severity": v.severity,
                "param": v.param,
                "data": str(job.folder.final / target),
                "split": ds.root.name if ds.split else None,
                "images": len(ok),
                "parameters": params,
            }
        )
    return sets


def _renamed(job: _Job, ok: list[int]) -> dict[str, str]:
    """Input path -> output name, for the images whose copy is not simply ``stem.png``
    (collisions, names too long, names that are not UTF-8), shown UTF-8 safe."""
    out = {}
    for i in ok:
        path, name = str(job.ds.paths[i]), job.names[i]
        plain = posixpath.splitext(path.replace("\\", "/"))[0] + ".png"
        if name != plain and name != path or _is_odd(path):
            out[shown_name(path)] = shown_name(name)
    return dict(sorted(out.items()))


def _progress_bar(progress: bool, n: int, k: int) -> Any:
    """A click progress bar over ``n`` images x ``k`` corruptions on stderr, or a context giving None."""
    if not progress:
        return contextlib.nullcontext(None)
    import click

    return click.progressbar(length=n * k, label=f"corrupting {n} images x {k}", file=sys.stderr)


def corrupt_dataset(
    data: "str | Any",
    out: "str | Any",
    corruptions: Sequence[CorruptionVariant],
    *,
    split: str | None = None,
    classes: Any = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = False,
    workers: int | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write corrupted copies of the data set ``data`` under ``out``, one folder per corruption and severity.

    ``out/NAME/severity-S/`` mirrors the input's layout, so each is a valid DATA argument:

    * class-folder tree: the same relative paths (``real/x.jpg`` -> ``real/x.png``);
    * split root with ``split``: the chosen split folder inside (``test/real/x.png``), used with the
      same ``--split``;
    * manifest CSV: the CSV under its own name (columns ``path,label``, labels ``real``/``fake``)
      plus the images at their relative paths (paths outside the CSV's folder go to ``files/``);
    * ``.npz``: the ``.npz`` under its own name, ``x`` corrupted, ``y`` unchanged.

    Images are corrupted at their own size and saved as PNG (lossless, so a JPEG corruption is not
    compressed twice). Names that collide or are too long are made unique deterministically
    (:func:`_png_names`); those and names that are not UTF-8 are kept and listed in ``renamed``.
    Each image gets its own generator (:func:`image_seed`), so the same seed
    gives the same bytes whatever the order or thread count. Unreadable images and images under
    MIN_SIDE px are skipped and counted; RobustlabError (exit 2) when nothing usable is left.
    ``out`` is built in a temporary sibling folder and renamed into place (refused when it exists,
    unless ``force``). Returns the ``out/run.json`` dict.
    """
    from robustlab.data import open_dataset
    from robustlab.runs import RunFolder, versions

    t0 = time.time()
    if not corruptions:
        raise RobustlabError("no corruption given", thing="--corruption", fix=f"name one or more of: {known()}")
    ds = open_dataset(data, split=split, classes=classes)
    source = Path(data)
    folder = RunFolder(out, force=force, inputs=(data, ds))
    try:
        names = _png_names(ds.paths, escape_prefix="files") if ds.kind == "manifest" else _png_names(_raw_relpaths(ds)) if ds.kind == "folders" else []
        job = _Job(ds, folder, corruptions, seed, names, f"{ds.root.name}/" if ds.kind == "folders" and ds.split else "")
        n = len(ds)
        with _progress_bar(progress, n, len(corruptions)) as bar, ThreadPoolExecutor(max_workers=workers or max(1, min(4, os.cpu_count() or 2)), thread_name_prefix="robustlab-corrupt") as pool:
            if ds.kind == "npz":
                _write_npz(job, pool, bar, source.name)
            else:
                _write_files(job, pool, bar)
        ok = _check_usable(job, source)
        if ds.kind == "manifest":
            _write_manifests(job, ok, source.name)
        n_small = sum(job.small_table[i] for i in ok)
        table_counts = {"cifar10-c": n_small, "imagenet-c": len(ok) - n_small}
        too_small = {shown_name(str(ds.paths[i])): job.reasons[ds.paths[i]] for i in range(n) if job.status[i] == "small"}
        info: dict[str, Any] = {
            "kind": "corrupt",
            "command": list(command) if command is not None else None,
            "seed": seed,
            "input": {"data": str(source), "split": split, "classes": classes, "layout": ds.kind},
            "data": ds.describe(),
            "sets": _sets(job, ok, source, table_counts),
            "images": {"written": len(ok), "skipped_unreadable": job.status.count("skipped"), "skipped_too_small": len(too_small)},
            "too_small_files": dict(sorted(too_small.items())),
            "renamed": _renamed(job, ok) if names else {},
            "tables": table_counts,
            "min_side": MIN_SIDE,
            "versions": versions(),
            "seconds": round(time.time() - t0, 3),
        }
        folder.commit(info)
        return info
    except BaseException:
        folder.abort()
        raise
