"""Saving delivered adversarial images as PNGs that mirror the input data set's layout, plus attacks.csv.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from robustlab.enums import SetKind
from robustlab.results import BatchRecord

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.data import Dataset

# --------------------------------------------------------------------------- saving adversarial sets


def _safe_parts(rel: str) -> list[str]:
    parts = [p for p in PurePosixPath(rel.replace("\\", "/")).parts if p not in ("", ".", "..", "/") and not p.endswith(":")]
    return parts or ["image"]


class AdversarialWriter:
    """An evaluation hook (:data:`robustlab.results.Hook`) saving delivered adversarial images as PNG.

    Images go under ``root`` (e.g. ``RunFolder.path("adversarial")``) mirroring the input's relative
    paths with a ``.png`` suffix (class-folder data: ``fake/img_001.png``; a manifest or .npz:
    ``real/`` / ``fake/`` + the path), so the folder is itself a valid DATA argument. With several
    attacks each gets a sub-folder named after it (``fgsm_eps=0.0314``). Also writes one CSV line per
    image (id, paths, variant, param, label, linf, l2, psnr, ssim, success) to ``table``.
    :meth:`summary` says what was saved (run.json's ``adversarial_images``).
    """

    FIELDS = ("id", "path", "adversarial_path", "variant", "param", "label", "linf", "l2", "psnr", "ssim", "success")

    def __init__(self, root: "str | Path", data: "Dataset", variants: Sequence[Any], *, table: "str | Path | None" = None, save_images: bool = True):
        from robustlab.reporting.tables import slug

        self.root = Path(root)
        self.data = data
        self.save_images = save_images
        attacks = [v for v in variants if getattr(v, "kind", None) is SetKind.ADVERSARIAL]
        self.prefix = {(v.variant, v.param): (slug(f"{v.variant}_{v.param}") + "/" if len(attacks) > 1 else "") for v in attacks}
        self.used: dict[str, set[str]] = {}
        self.images = 0
        self._summary: dict[str, Any] = {
            "folder": self.root.name if save_images else None,
            "layout": "one sub-folder per attack" if len(attacks) > 1 else "the input's relative paths",
            "folders": sorted({self.root.name + "/" + p for p in self.prefix.values()}),
            "table": None if table is None else Path(table).name,
        }
        self.table = None if table is None else Path(table)
        if self.table is not None:
            self.table.parent.mkdir(parents=True, exist_ok=True)
            self.table.write_text(",".join(self.FIELDS) + "\n", encoding="utf-8")

    def relpath(self, i: int) -> str:
        """Where image ``i`` of the data set goes, relative to the attack's folder."""
        data = self.data
        label = "fake" if int(data.labels[i]) == 1 else "real"
        if data.kind == "folders":
            parts = _safe_parts(data.paths[i])
        elif data.kind == "npz":
            parts = [label, f"x_{i:06d}"]
        else:
            parts = [label, *_safe_parts(data.paths[i])]
        stem = parts[-1]
        suffix = PurePosixPath(stem).suffix
        if suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"):
            stem = stem[: -len(suffix)]
        parts[-1] = stem + ".png"
        return "/".join(parts)

    def summary(self) -> dict[str, Any]:
        """What was saved: folder, number of images, layout, per-attack folders, the CSV table."""
        return {**self._summary, "images": self.images}

    def __call__(self, record: BatchRecord) -> None:
        import csv

        from PIL import Image

        v = record.variant
        if v is None or (v.variant, v.param) not in self.prefix:
            return
        prefix = self.prefix[(v.variant, v.param)]
        used = self.used.setdefault(prefix, set())
        ex = record.extras
        measured = all(k in ex for k in ("psnr", "ssim", "success"))
        lines = []
        for k, (i, img) in enumerate(zip(record.idx.tolist(), record.images)):
            rel = self.relpath(i)
            if rel in used:  # two inputs map to one name (a.jpg and a.png): keep both
                rel = f"{rel[:-4]}__{i}.png"
            used.add(rel)
            if self.save_images:
                path = self.root / f"{prefix}{rel}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(img)).save(path, format="PNG", compress_level=1)
                self.images += 1
            if self.table is not None:
                row = [i, self.data.paths[i], f"{prefix}{rel}", v.variant, v.param, int(self.data.labels[i])]
                if measured:
                    psnr = ex["psnr"][k]
                    row += [f"{record.linf[k]:g}", f"{record.l2[k]:.4f}", "inf" if not np.isfinite(psnr) else f"{psnr:.3f}", f"{ex['ssim'][k]:.5f}", int(ex["success"][k])]
                else:
                    row += ["", "", "", "", ""]
                lines.append(row)
        if self.table is not None and lines:
            import io

            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(lines)
            with self.table.open("a", encoding="utf-8") as fh:
                fh.write(buf.getvalue())
