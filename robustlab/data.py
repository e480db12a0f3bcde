"""Finding, decoding and batching images; manifests; skipped-file accounting.

A DATA argument (docs/contract.md, "Data") is a class-folder tree, a split root (``--split``), a manifest
CSV (``path,label``) or an ``.npz`` with ``x`` uint8 (N, H, W, 3) and ``y`` 0/1.

Labels are **fake = 1, real = 0** here, always; a detector with ``positive: real`` flips them
where scores are compared (see :func:`robustlab.evaluation.engine.evaluate`).

Images are decoded to RGB uint8 (grayscale replicated, palette/CMYK/16-bit converted, RGBA composited
on white, EXIF orientation applied: the defaults; a detector spec's ``decode``, ``alpha``, ``bit16``
and ``exif`` change them) and resized to the detector's input size by the library its ``resize``
names (robustlab.preprocess). Decoding streams in batches on worker threads, so memory does not
grow with the data set.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import stat
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from robustlab import preprocess
from robustlab.enums import ResizeMethod
from robustlab.errors import RobustlabError
from robustlab.preprocess import ImageDecodeError, Preprocessing, as_preprocessing, file_kind

log = logging.getLogger("robustlab")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}
SPLIT_NAMES = {"train", "training", "test", "testing", "val", "valid", "validation", "dev", "eval", "evaluation"}
LABELS = {"real": 0, "fake": 1}


class Batch(NamedTuple):
    """One decoded batch. ``x`` uint8 (B, H, W, 3); ``y`` int64 (B,) fake=1; ``idx`` int64 (B,)."""

    x: np.ndarray
    y: np.ndarray
    idx: np.ndarray


# --------------------------------------------------------------------------- decoding
# The backends (Pillow, OpenCV, TensorFlow) live in robustlab.preprocess; ``method`` below is a
# resize method (default decoding rules) or a whole Preprocessing (a detector spec's ``preprocessing``).


def decode_image(source: "str | os.PathLike | bytes", pre: Preprocessing | ResizeMethod | str = Preprocessing()) -> np.ndarray:
    """Decode a file (or bytes) to RGB uint8 (H, W, 3) by the contract's rules, or by ``pre``'s
    decoder, alpha, 16-bit and EXIF rules.

    Raises :class:`ImageDecodeError` for anything that is not a readable image.
    """
    return preprocess.decode(source, as_preprocessing(pre))


def resize_rgb(image: np.ndarray, size: tuple[int, int], method: Preprocessing | ResizeMethod | str = ResizeMethod.BILINEAR) -> np.ndarray:
    """uint8 (h, w, 3) -> uint8 (H, W, 3) with the library of ``method`` (a resize method or a
    Preprocessing's ``resize``); no-op when equal."""
    return preprocess.resize(image, size, as_preprocessing(method).resize)


def load_image(path: "str | os.PathLike", size: tuple[int, int] | None = None, method: Preprocessing | ResizeMethod | str = ResizeMethod.BILINEAR) -> np.ndarray:
    """Decode and (optionally) resize: "the image" of the contract, uint8 (H, W, 3)."""
    return preprocess.load(path, size, as_preprocessing(method))


# --------------------------------------------------------------------------- discovery


def _norm_class_name(name: str) -> str:
    return re.sub(r"^\d+[_\-\s.]*", "", name.strip().lower())


def parse_class_map(text: str | Mapping[str, Any] | None) -> dict[str, int]:
    """``real=authentic,fake=generated`` (``+`` joins several names) -> {folder_name_lower: label}."""
    mapping: dict[str, int] = {}
    if not text:
        return mapping
    items: Iterable[tuple[str, Any]]
    if isinstance(text, Mapping):
        items = text.items()
    else:
        items = []
        for part in str(text).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise RobustlabError(
                    f"--classes item {part.strip()!r} is not class=folder", fix="write e.g. --classes real=authentic,fake=generated"
                )
            k, v = part.split("=", 1)
            items.append((k, v))  # type: ignore[union-attr]
    for key, names in items:
        cls = str(key).strip().lower()
        if cls not in LABELS:
            raise RobustlabError(f"--classes names class {key!r}", fix="the classes are real and fake: --classes real=authentic,fake=generated")
        values = names if isinstance(names, (list, tuple)) else str(names).split("+")
        for n in values:
            n = str(n).strip().lower()
            if n:
                mapping[n] = LABELS[cls]
    return mapping


def _label_of(name: str, class_map: Mapping[str, int]) -> int | None:
    low = name.strip().lower()
    if low in class_map:
        return class_map[low]
    norm = _norm_class_name(name)
    if norm in class_map:
        return class_map[norm]
    return LABELS.get(norm)


def _parse_label(value: str, class_map: Mapping[str, int]) -> int | None:
    v = str(value).strip().lower()
    if v in ("0", "1"):
        return int(v)
    if v in ("0.0", "1.0"):
        return int(float(v))
    return _label_of(v, class_map)


def display_name(text: str) -> str:
    """A file name as valid UTF-8 text: bytes that are not UTF-8 (kept by Python as surrogate
    escapes) shown as ``\\xNN``. Used for ids, messages and every file robustlab writes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _note(message: str) -> None:
    """One line on stderr (file names made printable on any terminal encoding)."""
    print(display_name(message), file=sys.stderr)


@dataclass
class _Walk:
    """What a walk of class folders found: files to read, files skipped, loops and repeats."""

    files: list[tuple[Path, int, tuple[int, int]]] = field(default_factory=list)  # (path, label, (dev, inode))
    skipped: dict[Path, str] = field(default_factory=dict)
    loops: list[Path] = field(default_factory=list)
    repeats: int = 0


def _walk_class_folder(folder: Path, label: int, root: Path, found: _Walk, seen: dict[tuple[int, int], tuple[Path, int]]) -> None:
    """Add the files under ``folder`` (sorted, hidden names skipped) to ``found``.

    Symbolic links are followed once: a linked folder that is the data root, one of its ancestors
    or a folder already walked is a loop (skipped, reported); a file reached twice (links, hard
    links) is counted once; a file under two class folders is refused. Only regular files are read;
    FIFOs, sockets and devices are skipped and reported.
    """
    root_id = os.stat(root)
    stack: list[tuple[Path, tuple[tuple[int, int], ...]]] = [(folder, ((root_id.st_dev, root_id.st_ino),))]
    walked: set[tuple[int, int]] = set()
    while stack:
        d, ancestors = stack.pop()
        try:
            st = os.stat(d)
        except OSError as exc:
            found.skipped[d] = f"unreadable folder ({exc.strerror or exc.__class__.__name__})"
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in ancestors or ident in walked:
            found.loops.append(d)
            continue
        walked.add(ident)
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            found.skipped[d] = f"unreadable folder ({exc.strerror or exc.__class__.__name__})"
            continue
        subdirs = []
        for e in entries:
            if e.name.startswith(".") or e.name in ("Thumbs.db", "desktop.ini"):
                continue
            path = Path(e.path)
            try:
                est = os.stat(path)  # follows links
            except OSError as exc:
                found.skipped[path] = "broken symbolic link" if e.is_symlink() else f"cannot stat ({exc.strerror or exc.__class__.__name__})"
                continue
            if stat.S_ISDIR(est.st_mode):
                subdirs.append(path)
                continue
            if not stat.S_ISREG(est.st_mode):
                found.skipped[path] = f"{file_kind(est.st_mode)}, not a regular file"
                continue
            fid = (est.st_dev, est.st_ino)
            if fid in seen:
                first, first_label = seen[fid]
                if first_label != label:
                    raise RobustlabError(
                        f"the same file is under both a real and a fake folder: {display_name(first.relative_to(root).as_posix())} and {display_name(path.relative_to(root).as_posix())}",
                        thing=root,
                        fix="remove the link or copy that labels the image twice",
                    )
                found.repeats += 1
                continue
            seen[fid] = (path, label)
            found.files.append((path, label, fid))
        for sub in reversed(subdirs):
            stack.append((sub, ancestors + (ident,)))


@dataclass
class Dataset:
    """A labelled image set: relative paths (ids), labels (fake=1) and how to read each image.

    ``skipped`` maps relative path -> reason for every file found unreadable so far (filled while
    decoding; each is named once on stderr).
    """

    root: Path
    kind: str  # folders | manifest | npz
    paths: list[str]
    labels: np.ndarray
    split: str | None = None
    _files: list[Path] | None = None
    _x: np.ndarray | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    duplicates: int = 0  # repeated manifest rows dropped
    data_arg: Path | None = None  # the DATA argument (folder, split root, CSV or .npz), resolved

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def counts(self) -> dict[str, int]:
        n_fake = int(self.labels.sum())
        return {"real": int(len(self.labels) - n_fake), "fake": n_fake}

    def fingerprint(self) -> str:
        """sha256 over (relative path, label, byte size) of every image, or the npz arrays."""
        h = hashlib.sha256()
        h.update(self.kind.encode())
        if self._x is not None:
            h.update(np.ascontiguousarray(self._x).data)
            h.update(np.ascontiguousarray(self.labels.astype(np.int8)).data)
            return h.hexdigest()
        assert self._files is not None
        for rel, label, f in sorted(zip(self.paths, self.labels.tolist(), self._files)):
            try:
                size = f.stat().st_size
            except OSError:
                size = -1
            h.update(f"{rel}\t{label}\t{size}\n".encode("utf-8", "surrogateescape"))  # names that are not UTF-8 too
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "kind": self.kind,
            "split": self.split,
            "n": len(self),
            "counts": self.counts,
            "fingerprint": self.fingerprint(),
            "skipped": len(self.skipped),
            "skipped_files": dict(sorted(self.skipped.items())),
            "duplicates_dropped": self.duplicates,
        }

    def input_paths(self) -> list[tuple[Path, bool]]:
        """``[(resolved path, is_container)]`` an output must keep away from (see
        :func:`robustlab.runs.input_paths`): the DATA argument and root; for a manifest, the CSV
        and every file it lists (an output may sit beside them, not hold them)."""
        out = []
        # a manifest's folder is not a data tree (only the listed files are read): not a container
        for p in (self.data_arg,) if self.kind == "manifest" else (self.data_arg, self.root):
            if p is not None:
                real = Path(os.path.realpath(p))
                out.append((real, real.is_dir()))
        if self.kind == "manifest" and self._files is not None:
            out.extend((Path(os.path.realpath(f)), False) for f in self._files)
        return out

    def subset(self, indices: Sequence[int]) -> "Dataset":
        """A view on some of the images (same root, ids kept as relative paths)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(
            root=self.root,
            kind=self.kind,
            paths=[self.paths[i] for i in idx],
            labels=self.labels[idx],
            split=self.split,
            _files=None if self._files is None else [self._files[i] for i in idx],
            _x=None if self._x is None else self._x[idx],
            data_arg=self.data_arg,
        )

    # ---- reading ------------------------------------------------------------------
    def read(self, i: int, size: tuple[int, int] | None, method: ResizeMethod | str = ResizeMethod.BILINEAR) -> np.ndarray:
        """Image ``i`` as uint8 (H, W, 3); raises ImageDecodeError when unreadable."""
        if self._x is not None:
            img = self._x[i]
            return img if size is None else resize_rgb(img, size, method)
        assert self._files is not None
        return load_image(self._files[i], size, method)

    def source(self, i: int) -> Path | None:
        return None if self._files is None else self._files[i]

    def _skip(self, i: int, reason: str) -> None:
        rel = self.paths[i]
        if rel not in self.skipped:
            self.skipped[rel] = reason
            _note(f"robustlab: skipped {self.root / rel if self._x is None else rel}: {reason}")

    def _decode_chunk(self, chunk: np.ndarray, size: tuple[int, int], method: ResizeMethod) -> tuple[list[np.ndarray], list[int]]:
        images, ok = [], []
        for i in chunk.tolist():
            if self.paths[i] in self.skipped:
                continue
            try:
                images.append(self.read(i, size, method))
                ok.append(i)
            except ImageDecodeError as exc:
                self._skip(i, str(exc))
        return images, ok

    def batches(
        self,
        size: tuple[int, int],
        *,
        method: ResizeMethod | str = ResizeMethod.BILINEAR,
        batch_size: int = 32,
        indices: Sequence[int] | None = None,
        workers: int | None = None,
        positive: str = "fake",
    ) -> Iterator[Batch]:
        """Stream decoded batches in index order; unreadable images are skipped (and recorded).

        ``positive`` names the class that is 1 in each batch's ``y`` (a detector's ``positive``:
        ``"real"`` flips the labels), so callers never convert labels themselves.

        Decoding runs ``workers`` batches ahead on threads (Pillow releases the GIL), so the
        caller's model work overlaps with reading. Memory: about ``(workers + 2) * batch_size``
        images at a time.
        """
        method = as_preprocessing(method)  # a resize method, or a detector's whole Preprocessing
        order = np.arange(len(self), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        if workers is None:
            workers = max(1, min(4, (os.cpu_count() or 2)))
        h, w = size
        empty = np.zeros((0, h, w, 3), np.uint8)
        labels = self.labels_for(positive)
        if self._x is not None and self._x.shape[1:3] == (h, w):
            for chunk in chunks:
                yield Batch(self._x[chunk], labels[chunk], chunk)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="robustlab-decode") as pool:
            pending: deque[Future] = deque()
            it = iter(chunks)
            for chunk in it:
                pending.append(pool.submit(self._decode_chunk, chunk, size, method))
                if len(pending) > workers:
                    break
            while pending:
                images, ok = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(self._decode_chunk, nxt, size, method))
                idx = np.asarray(ok, dtype=np.int64)
                x = np.stack(images) if images else empty
                yield Batch(x, labels[idx], idx)

    def labels_for(self, positive: str = "fake") -> np.ndarray:
        """int64 (N,) labels with ``positive`` (``"fake"`` or ``"real"``) as class 1."""
        if positive not in LABELS:
            raise ValueError(f"positive must be 'fake' or 'real', not {positive!r}")
        labels = self.labels.astype(np.int64)
        return labels if positive == "fake" else 1 - labels

    def load_arrays(
        self,
        size: tuple[int, int],
        *,
        method: ResizeMethod | str = ResizeMethod.BILINEAR,
        indices: Sequence[int] | None = None,
        batch_size: int = 64,
        positive: str = "fake",
    ) -> Batch:
        """The whole set (or ``indices``) in memory: x uint8 (N, H, W, 3), y, idx. For small sets."""
        xs, ys, ids = [], [], []
        for b in self.batches(size, method=method, batch_size=batch_size, indices=indices, positive=positive):
            xs.append(b.x)
            ys.append(b.y)
            ids.append(b.idx)
        h, w = size
        if not xs:
            return Batch(np.zeros((0, h, w, 3), np.uint8), np.zeros((0,), np.int64), np.zeros((0,), np.int64))
        return Batch(np.concatenate(xs), np.concatenate(ys), np.concatenate(ids))


def _check_classes(ds: Dataset, thing: Path, require_both: bool) -> Dataset:
    if len(ds) == 0:
        raise RobustlabError("no images found", thing=thing, fix="point at a folder with real/ and fake/ sub-folders, a manifest CSV or an .npz (see README: Data)")
    if require_both:
        counts = ds.counts
        missing = [c for c, n in counts.items() if n == 0]
        if missing:
            have = [c for c, n in counts.items() if n]
            raise RobustlabError(
                f"only one class ({', '.join(have)}) found, no {missing[0]} images",
                thing=thing,
                fix="robustlab needs both real and fake images; add the missing class or map folder names with --classes",
            )
    return ds


def _from_class_folders(root: Path, class_map: Mapping[str, int], split: str | None) -> Dataset:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    labelled: list[tuple[Path, int]] = []
    unknown = []
    for d in subdirs:
        label = _label_of(d.name, class_map)
        if label is None:
            unknown.append(d.name)
        else:
            labelled.append((d, label))
    if unknown and not labelled:
        raise RobustlabError(
            f"sub-folders {', '.join(unknown[:6])} are not real/fake class folders",
            thing=root,
            fix=f"name them real/ and fake/, or map them: --classes real={unknown[0]},fake={unknown[-1]}",
        )
    found = _Walk()
    seen: dict[tuple[int, int], tuple[Path, int]] = {}
    for d, label in labelled:
        _walk_class_folder(d, label, root, found, seen)
    files = [f for f, _, _ in found.files]
    paths = [display_name(f.relative_to(root).as_posix()) for f in files]
    labels = [label for _, label, _ in found.files]
    ds = Dataset(root=root, kind="folders", paths=paths, labels=np.asarray(labels, np.int64), split=split, _files=files)
    ds.ignored = unknown
    for f, reason in found.skipped.items():
        ds.skipped[display_name(f.relative_to(root).as_posix())] = reason
        _note(f"robustlab: skipped {f}: {reason}")
    if found.loops:
        _note(f"robustlab: note: {root}: {len(found.loops)} linked folder(s) lead back to folders already read (a loop), not read again: {', '.join(str(p.relative_to(root)) for p in found.loops[:4])}")
    if found.repeats:
        _note(f"robustlab: note: {root}: {found.repeats} file(s) reached twice through links are counted once")
    if unknown:
        log.warning("%s: ignoring sub-folders that are not real/fake: %s (map them with --classes)", root, ", ".join(unknown))
    return ds


def _from_manifest(path: Path, class_map: Mapping[str, int]) -> Dataset:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "path" not in fields or "label" not in fields:
                raise RobustlabError(f"manifest columns are {fields or 'missing'}", thing=path, fix="the CSV needs a header with columns path,label")
            rows = [{(k or "").strip().lower(): (v or "") for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RobustlabError(f"cannot read manifest ({exc.__class__.__name__}: {exc})", thing=path, fix="save it as a UTF-8 CSV with columns path,label") from None
    base = path.parent
    paths, files, labels = [], [], []
    first_line: dict[str, tuple[int, int]] = {}  # real path -> (line, label)
    dropped: list[tuple[int, int]] = []
    for lineno, row in enumerate(rows, start=2):
        label = _parse_label(row["label"], class_map)
        if label is None:
            raise RobustlabError(f"line {lineno}: label {row['label']!r} is not 0/1/real/fake", thing=path, fix="use 0 (real) / 1 (fake), or map names with --classes")
        rel = row["path"].strip()
        if not rel:
            raise RobustlabError(f"line {lineno}: empty path", thing=path, fix="give every row a path relative to the CSV")
        f = Path(rel) if Path(rel).is_absolute() else base / rel
        key = os.path.realpath(f)
        if key in first_line:
            line0, label0 = first_line[key]
            if label0 != label:
                raise RobustlabError(
                    f"line {line0} lists {rows[line0 - 2]['path'].strip()!r} as {'fake' if label0 else 'real'} and line {lineno} lists {rel!r} as {'fake' if label else 'real'} (the same file)",
                    thing=path,
                    fix="give each image one label; remove one of the two rows",
                )
            dropped.append((lineno, line0))
            continue
        first_line[key] = (lineno, label)
        paths.append(display_name(rel))
        files.append(f)
        labels.append(label)
    if dropped:
        shown = ", ".join(f"line {a} = line {b}" for a, b in dropped[:4])
        _note(f"robustlab: note: {path}: {len(dropped)} repeated row(s) dropped, each image is counted once ({shown}{' ...' if len(dropped) > 4 else ''})")
    ds = Dataset(root=base, kind="manifest", paths=paths, labels=np.asarray(labels, np.int64), _files=files)
    ds.duplicates = len(dropped)
    return ds


def _from_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files or "y" not in z.files:
                raise RobustlabError(f"arrays are {z.files}", thing=path, fix="save the images as x (uint8 N x H x W x 3) and labels as y (0/1)")
            x = z["x"]
            y = z["y"]
    except RobustlabError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RobustlabError(f"cannot read .npz ({exc.__class__.__name__})", thing=path, fix="save with numpy.savez(path, x=..., y=...)") from None
    fix_x = "x must be uint8 N x H x W x 3 (H, W >= 1)"
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise RobustlabError(f"x has shape {x.shape}", thing=path, fix=fix_x)
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise RobustlabError(f"x holds empty images (shape {x.shape})", thing=path, fix=fix_x)
    if x.dtype != np.uint8:
        raise RobustlabError(f"x is {x.dtype}, not uint8", thing=path, fix="store images as uint8 0-255 (x.astype(np.uint8))")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    y = np.asarray(y)
    if y.dtype.kind not in "uibf":
        raise RobustlabError(f"y is {y.dtype}, not integer labels", thing=path, fix="store labels as integers 0 (real) / 1 (fake)")
    if y.ndim > 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise RobustlabError(f"y has shape {y.shape}, not (N,)", thing=path, fix="store one 0/1 label per image (not one-hot)")
    y = y.reshape(-1)
    if len(y) != len(x):
        raise RobustlabError(f"x has {len(x)} images but y has {len(y)} labels", thing=path, fix="save one label per image")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise RobustlabError(f"y has {int((~np.isfinite(y)).sum())} non-finite values (NaN or inf)", thing=path, fix="use 0 for real and 1 for fake")
    if not np.isin(y, (0, 1)).all():
        raise RobustlabError("y has values other than 0 and 1", thing=path, fix="use 0 for real and 1 for fake")
    paths = [f"x[{i}]" for i in range(len(x))]
    return Dataset(root=path, kind="npz", paths=paths, labels=y.astype(np.int64), _x=np.ascontiguousarray(x))


def split_folders(root: Path) -> dict[str, Path]:
    """{name: folder} of the split sub-folders (train/, test/, Validation/...) of a root."""
    out = {}
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if d.is_dir() and d.name.lower() in SPLIT_NAMES:
                out[d.name] = d
    return out


def open_dataset(
    data: "str | os.PathLike",
    *,
    split: str | None = None,
    classes: "str | Mapping[str, Any] | None" = None,
    require_both: bool = True,
) -> Dataset:
    """Open a DATA argument (folder tree, split root, manifest CSV or .npz) without decoding images.

    ``classes`` maps other folder/label names: ``"real=authentic,fake=generated"``.
    ``require_both``: refuse a set with only one class (exit 2 at the CLI).
    """
    root = Path(data)
    class_map = parse_class_map(classes)
    ds = _open(root, split, class_map, require_both)
    ds.data_arg = Path(os.path.realpath(root))
    return ds


def _open(root: Path, split: str | None, class_map: Mapping[str, int], require_both: bool) -> Dataset:
    if not root.exists():
        raise RobustlabError("no such file or folder", thing=root, fix="check the DATA path")
    if not root.is_file() and not root.is_dir():
        raise RobustlabError(f"is {file_kind(os.stat(root).st_mode)}, not a file or folder", thing=root, fix="pass a folder with real/ and fake/ sub-folders, a manifest CSV or an .npz")
    if root.is_file():
        suffix = root.suffix.lower()
        if split:
            raise RobustlabError(f"--split {split} given, but DATA is a file", thing=root, fix="drop --split")
        if suffix == ".csv":
            ds = _from_manifest(root, class_map)
        elif suffix == ".npz":
            ds = _from_npz(root)
        else:
            raise RobustlabError(
                f"a DATA file must be a manifest .csv or an .npz, not {suffix or 'a file without extension'}",
                thing=root,
                fix="pass a folder with real/ and fake/ sub-folders, a manifest CSV or an .npz",
            )
        return _check_classes(ds, root, require_both)
    splits = split_folders(root)
    if split is not None:
        match = {k.lower(): v for k, v in splits.items()}.get(split.strip().lower())
        if match is None:
            have = ", ".join(splits) or "none"
            raise RobustlabError(f"no split folder {split!r} (split folders: {have})", thing=root, fix="choose one of the split folders with --split, or drop --split")
        return _check_classes(_from_class_folders(match, class_map, split=match.name), match, require_both)
    if splits and not any(_label_of(d.name, class_map) is not None for d in root.iterdir() if d.is_dir()):
        have = ", ".join(splits)
        first = "test" if any(k.lower() == "test" for k in splits) else next(iter(splits))
        raise RobustlabError(f"this is a split root ({have})", thing=root, fix=f"choose one with --split, e.g. --split {first}, or pass the split folder itself ({root / first})")
    return _check_classes(_from_class_folders(root, class_map, split=None), root, require_both)
