"""robustlab corrupt: corrupted copies of a data set, in the same layout as the input.
"""
from __future__ import annotations

import contextlib
import re
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

# --------------------------------------------------------------------------- corrupted copies of a data set


def variant_folder(name: str, severity: int) -> str:
    """Relative folder of one corruption and severity inside ``robustlab corrupt --out DIR``."""
    return f"{name}/severity-{severity}"


def _png_names(paths: Sequence[str], *, escape_prefix: str | None = None) -> list[str]:
    """Output file names (posix, relative): same path, ``.png`` suffix; collisions keep the old suffix.

    ``a/b.jpg`` -> ``a/b.png`` unless another input also maps there, then ``a/b.jpg.png``. With
    ``escape_prefix``, absolute paths and paths leaving their folder (``..``) become
    ``PREFIX/000123_name.png`` (manifests may point anywhere).
    """
    import posixpath

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
    return [c if counts[c.lower()] == 1 or r == c else r + ".png" for r, c in zip(rels, candidates)]


def _save_png(path: Any, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="RGB").save(path, format="PNG", compress_level=1)


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
    compressed twice). Each image gets its own generator (:func:`image_seed`), so the same seed
    gives the same bytes whatever the order or thread count. Unreadable images and images under
    MIN_SIDE px are skipped and counted; RobustlabError (exit 2) when nothing usable is left.
    ``out`` is built in a temporary sibling folder and renamed into place (refused when it exists,
    unless ``force``). Returns the ``out/run.json`` dict.
    """
    import os
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from robustlab.data import ImageDecodeError, open_dataset
    from robustlab.runs import RunFolder

    t0 = time.time()
    if not corruptions:
        raise RobustlabError("no corruption given", thing="--corruption", fix=f"name one or more of: {known()}")
    ds = open_dataset(data, split=split, classes=classes)
    source = Path(data)
    folder = RunFolder(out, force=force, inputs=(data, ds))
    try:
        n = len(ds)
        if ds.kind == "manifest":
            names = _png_names(ds.paths, escape_prefix="files")
            layout_prefix = ""
        elif ds.kind == "folders":
            names = _png_names(ds.paths)
            layout_prefix = f"{ds.root.name}/" if ds.split else ""
        else:
            names = []
            layout_prefix = ""
        status: list[str] = ["?"] * n  # ok | skipped | small
        small_table = [False] * n
        reasons: dict[str, str] = {}

        def read(i: int) -> np.ndarray | None:
            try:
                img = ds.read(i, None)
            except ImageDecodeError as exc:
                status[i] = "skipped"
                reasons[ds.paths[i]] = str(exc)
                ds.skipped[ds.paths[i]] = str(exc)
                print(f"robustlab: skipped {ds.source(i) or ds.paths[i]}: {exc}", file=sys.stderr)
                return None
            try:
                check_size(img.shape)
            except ImageTooSmall as exc:
                status[i] = "small"
                reasons[ds.paths[i]] = str(exc)
                print(f"robustlab: skipped {ds.source(i) or ds.paths[i]}: {exc}", file=sys.stderr)
                return None
            status[i] = "ok"
            small_table[i] = is_small(img.shape)
            return img

        def one_file(i: int) -> None:
            img = read(i)
            if img is None:
                return
            for v in corruptions:
                delivered = corrupt(img, v.name, v.severity, image_seed(seed, v.name, v.severity, i))
                _save_png(folder.path(f"{variant_folder(v.name, v.severity)}/{layout_prefix}{names[i]}"), delivered)

        workers = workers or max(1, min(4, os.cpu_count() or 2))
        total = n if ds.kind != "npz" else n * len(corruptions)
        bar_ctx: Any = contextlib.nullcontext(None)
        if progress:
            import click

            bar_ctx = click.progressbar(length=total, label=f"corrupting {n} images x {len(corruptions)}", file=sys.stderr)
        with bar_ctx as bar, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="robustlab-corrupt") as pool:
            if ds.kind != "npz":
                for s in range(0, n, 64):
                    ids = range(s, min(n, s + 64))
                    list(pool.map(one_file, ids))
                    if bar is not None:
                        bar.update(len(ids))
            else:
                images = [read(i) for i in range(n)]
                ok = [i for i in range(n) if status[i] == "ok"]
                for v in corruptions:
                    if not ok:
                        break
                    x = np.empty((len(ok),) + images[ok[0]].shape, np.uint8)

                    def fill(k: int, v: CorruptionVariant = v, x: np.ndarray = x) -> None:
                        i = ok[k]
                        x[k] = corrupt(images[i], v.name, v.severity, image_seed(seed, v.name, v.severity, i))

                    list(pool.map(fill, range(len(ok))))
                    with open(folder.path(f"{variant_folder(v.name, v.severity)}/{source.name}"), "wb") as fh:
                        np.savez(fh, x=x, y=ds.labels[ok].astype(np.int64))
                    del x
                    if bar is not None:
                        bar.update(n)

        ok = [i for i in range(n) if status[i] == "ok"]
        too_small = {ds.paths[i]: reasons[ds.paths[i]] for i in range(n) if status[i] == "small"}
        if not ok:
            if too_small:
                raise RobustlabError(
                    f"all {len(too_small)} readable images are too small for the corruptions (under {MIN_SIDE} px a side)",
                    thing=source,
                    fix=f"use images of at least {MIN_SIDE}x{MIN_SIDE} px",
                )
            raise RobustlabError("no image could be read", thing=source, fix="check the files (see the skipped list above)")
        labels = ds.labels[ok]
        missing = [c for c, lab in (("real", 0), ("fake", 1)) if not (labels == lab).any()]
        if missing:
            raise RobustlabError(
                f"after skipping {n - len(ok)} unreadable or too-small images no {missing[0]} image is left",
                thing=source,
                fix="the corrupted copies would not be a valid data set; check the skipped images",
            )
        if ds.kind == "manifest":
            import csv
            import io as _io

            buf = _io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["path", "label"])
            for i in ok:
                w.writerow([names[i], "fake" if ds.labels[i] == 1 else "real"])
            for v in corruptions:
                folder.write_text(f"{variant_folder(v.name, v.severity)}/{source.name}", buf.getvalue())

        n_small = sum(small_table[i] for i in ok)
        table_counts = {"cifar10-c": n_small, "imagenet-c": len(ok) - n_small}
        out_final = folder.final
        sets = []
        for v in corruptions:
            rel = variant_folder(v.name, v.severity)
            target = rel if ds.kind in ("folders",) else f"{rel}/{source.name}"
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
                    "data": str(out_final / target),
                    "split": ds.root.name if ds.split else None,
                    "images": len(ok),
                    "parameters": params,
                }
            )
        from robustlab.runs import versions

        info: dict[str, Any] = {
            "kind": "corrupt",
            "command": list(command) if command is not None else None,
            "seed": seed,
            "input": {"data": str(source), "split": split, "classes": classes, "layout": ds.kind},
            "data": ds.describe(),
            "sets": sets,
            "images": {"written": len(ok), "skipped_unreadable": sum(s == "skipped" for s in status), "skipped_too_small": len(too_small)},
            "too_small_files": dict(sorted(too_small.items())),
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
