"""Decoding and resizing as the detector's own pipeline did it, by the library it used.

A :class:`Preprocessing` says how a file becomes "the image" (RGB uint8, H x W x 3): which library
decodes it (``decode``), what happens to transparency (``alpha``), 16-bit grayscale (``bit16``) and
the EXIF orientation tag (``exif``), then which library resizes it to the input size (``resize``).
Every backend calls the library itself, so robustlab's image is pixel-equal to what that library
gives (tests/test_preprocess.py checks each one against a direct call):

==================  =========================================================================
``pil-*``           ``PIL.Image.resize`` with NEAREST / BILINEAR / BICUBIC / BOX. ``pil-nearest`` is
                    what ``keras.utils.load_img(target_size=...)`` does; ``nearest``, ``bilinear``,
                    ``bicubic`` and ``area`` are the same four Pillow filters (the old names).
``cv2-*``           ``cv2.resize`` with INTER_LINEAR (its default) / INTER_AREA / INTER_CUBIC.
``tf-*``            ``tf.image.resize`` bilinear (antialias off: its default, and what
                    ``image_dataset_from_directory`` uses), area, bilinear with ``antialias=True``.
==================  =========================================================================

TensorFlow resizes to float32. robustlab's image is uint8 (attacks deliver uint8 PNGs), so a ``tf-*``
result is rounded to the nearest level (``np.rint``, ties to even) and clipped to 0..255: at most 0.5
levels from the floats a model trained with ``image_dataset_from_directory`` saw.

OpenCV is optional (``pip install 'robustlab[cv2]'``); it and TensorFlow are imported when first used.
"""
from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from robustlab.enums import AlphaRule, Bit16Rule, Decoder, ExifRule, ResizeMethod
from robustlab.errors import RobustlabError

CV2_FIX = "pip install 'robustlab[cv2]' (OpenCV), or choose a pil-* or tf-* resize and decode: pil"

# what each decoding library does on its own: alpha, 16-bit grayscale, EXIF orientation
LIBRARY_RULES: dict[Decoder, tuple[AlphaRule | None, Bit16Rule | None, ExifRule | None]] = {
    Decoder.PIL: (None, None, None),  # every rule is robustlab's choice
    Decoder.CV2: (AlphaRule.DROP, Bit16Rule.SHIFT, None),  # cv2.imread: IMREAD_COLOR; orientation unless IMREAD_IGNORE_ORIENTATION
    Decoder.TF: (AlphaRule.DROP, Bit16Rule.SHIFT, ExifRule.IGNORE),  # tf.io.decode_image(channels=3)
}
PIL_DEFAULTS = (AlphaRule.WHITE, Bit16Rule.SCALE, ExifRule.APPLY)  # docs/contract.md, "Units": robustlab's own rules


class ImageDecodeError(Exception):
    """An image could not be decoded (a skipped file, never fatal for a data set)."""


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes the detector's input image (see the module docstring)."""

    resize: ResizeMethod = ResizeMethod.BILINEAR
    decode: Decoder = Decoder.PIL
    alpha: AlphaRule = AlphaRule.WHITE
    bit16: Bit16Rule = Bit16Rule.SCALE
    exif: ExifRule = ExifRule.APPLY

    def describe(self) -> dict[str, str]:
        """The five rules as strings, plus the versions of the libraries they use."""
        out = {k: str(getattr(self, k)) for k in ("resize", "decode", "alpha", "bit16", "exif")}
        out["libraries"] = ", ".join(f"{k} {v}" for k, v in library_versions(self).items())
        return out


def default_rules(decode: Decoder) -> tuple[AlphaRule, Bit16Rule, ExifRule]:
    """(alpha, bit16, exif) when a spec does not say: the decoding library's own, robustlab's for Pillow."""
    lib = LIBRARY_RULES[decode]
    return tuple(lib[i] or PIL_DEFAULTS[i] for i in range(3))  # type: ignore[return-value]


def make_preprocessing(
    resize: "ResizeMethod | str | None" = None,
    decode: "Decoder | str | None" = None,
    alpha: "AlphaRule | str | None" = None,
    bit16: "Bit16Rule | str | None" = None,
    exif: "ExifRule | str | None" = None,
    *,
    thing: str | None = None,
) -> Preprocessing:
    """Validate the five rules (strings from a spec, ``None`` = the default) into a Preprocessing.

    ``decode: cv2`` and ``decode: tf`` do what their library does: a spec that asks them for another
    alpha or 16-bit rule (or EXIF for TensorFlow) is refused in one line rather than silently changed.
    """
    method = ResizeMethod.parse(resize or ResizeMethod.BILINEAR, what="resize method", thing=thing)
    dec = Decoder.parse(decode or Decoder.PIL, what="decoder", thing=thing)
    defaults = default_rules(dec)
    rules = []
    for i, (key, value, enum) in enumerate((("alpha", alpha, AlphaRule), ("bit16", bit16, Bit16Rule), ("exif", exif, ExifRule))):
        rule = enum.parse(value, what=key, thing=thing) if value not in (None, "") else defaults[i]
        fixed = LIBRARY_RULES[dec][i]
        if fixed is not None and rule is not fixed:
            raise RobustlabError(
                f"{key}: {rule} but decode: {dec} always gives {key} {fixed} (that is what {_decoder_call(dec)} does)",
                thing=thing,
                fix=f"remove {key}: (or write {key}: {fixed}), or decode with pil to choose it",
            )
        rules.append(rule)
    pre = Preprocessing(method, dec, *rules)
    require_libraries(pre, thing=thing)
    return pre


def as_preprocessing(method: "Preprocessing | ResizeMethod | str") -> Preprocessing:
    """A Preprocessing from itself, or from a resize method alone (default decoding rules)."""
    if isinstance(method, Preprocessing):
        return method
    return Preprocessing(resize=ResizeMethod.parse(method, what="resize method"))


def _decoder_call(dec: Decoder) -> str:
    return {Decoder.PIL: "PIL.Image.open", Decoder.CV2: "cv2.imread", Decoder.TF: "tf.io.decode_image(channels=3)"}[dec]


def _cv2(thing: str | None = None) -> Any:
    try:
        import cv2
    except ImportError:
        raise RobustlabError("this preprocessing uses OpenCV (cv2), which is not installed", thing=thing, fix=CV2_FIX) from None
    return cv2


def require_libraries(pre: Preprocessing, *, thing: str | None = None) -> None:
    """Raise a one-line RobustlabError now (not mid-run) when a library the rules need is missing."""
    if pre.decode is Decoder.CV2 or pre.resize.library == "cv2":
        _cv2(thing)


def library_versions(pre: Preprocessing) -> dict[str, str]:
    """{library: version} of what ``pre`` decodes and resizes with."""
    import importlib.metadata as md

    names = {"pil": "pillow", "cv2": "opencv-python", "tf": "tensorflow"}
    out = {}
    for lib in dict.fromkeys((str(pre.decode), pre.resize.library)):
        dist = names[lib]
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            if lib == "cv2":  # another OpenCV wheel (headless, contrib) provides the same module
                out[dist] = str(getattr(_cv2(), "__version__", "unknown"))
            else:
                out[dist] = "unknown"
    return out


# --------------------------------------------------------------------------- resizing


def _pil_filter(method: ResizeMethod) -> int:
    from PIL import Image

    R = Image.Resampling
    return {
        ResizeMethod.NEAREST: R.NEAREST,
        ResizeMethod.BILINEAR: R.BILINEAR,
        ResizeMethod.BICUBIC: R.BICUBIC,
        ResizeMethod.AREA: R.BOX,
        ResizeMethod.PIL_NEAREST: R.NEAREST,
        ResizeMethod.PIL_BILINEAR: R.BILINEAR,
        ResizeMethod.PIL_BICUBIC: R.BICUBIC,
        ResizeMethod.PIL_BOX: R.BOX,
    }[method]


def _resize_pil(image: np.ndarray, size: tuple[int, int], method: ResizeMethod) -> np.ndarray:
    from PIL import Image

    h, w = size
    return np.asarray(Image.fromarray(image, mode="RGB").resize((w, h), resample=_pil_filter(method)), dtype=np.uint8)


def _resize_cv2(image: np.ndarray, size: tuple[int, int], method: ResizeMethod) -> np.ndarray:
    cv2 = _cv2()
    flag = {ResizeMethod.CV2_LINEAR: cv2.INTER_LINEAR, ResizeMethod.CV2_AREA: cv2.INTER_AREA, ResizeMethod.CV2_CUBIC: cv2.INTER_CUBIC}[method]
    h, w = size
    return np.asarray(cv2.resize(image, (w, h), interpolation=flag), dtype=np.uint8)  # per channel: RGB or BGR alike


def _resize_tf(image: np.ndarray, size: tuple[int, int], method: ResizeMethod) -> np.ndarray:
    import tensorflow as tf

    kind, antialias = {ResizeMethod.TF_BILINEAR: ("bilinear", False), ResizeMethod.TF_AREA: ("area", False), ResizeMethod.TF_BILINEAR_AA: ("bilinear", True)}[method]
    out = tf.image.resize(tf.constant(image), size, method=kind, antialias=antialias).numpy()
    return to_uint8(out)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float (any shape) -> uint8: rounded to the nearest level (ties to even), clipped to 0..255."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


RESIZE_BACKENDS: dict[str, Callable[[np.ndarray, tuple[int, int], ResizeMethod], np.ndarray]] = {
    "pil": _resize_pil,
    "cv2": _resize_cv2,
    "tf": _resize_tf,
}


def resize(image: np.ndarray, size: tuple[int, int], method: "ResizeMethod | str" = ResizeMethod.BILINEAR) -> np.ndarray:
    """uint8 (h, w, 3) -> uint8 (H, W, 3) with ``method``'s library; a copy, unchanged, when the size
    already matches (as Keras ``load_img`` skips it; every backend here is the identity then)."""
    method = ResizeMethod.parse(method, what="resize method")
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.shape[:2] == tuple(size):
        return image
    return RESIZE_BACKENDS[method.library](image, (int(size[0]), int(size[1])), method)


# --------------------------------------------------------------------------- decoding

_SIXTEEN = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _pil_to_rgb(im: Any, pre: Preprocessing) -> Any:
    """Any PIL image -> an RGB PIL image by ``pre``'s alpha and 16-bit rules."""
    from PIL import Image

    mode = im.mode
    if mode in _SIXTEEN:
        if pre.bit16 is Bit16Rule.CLIP:
            return im.convert("RGB")  # Pillow's own clipping, as keras.utils.load_img does it
        a = np.asarray(im, dtype=np.float64)
        if mode == "F" and a.size and float(np.nanmax(a)) <= 1.0:
            a = a * 255.0
        elif pre.bit16 is Bit16Rule.SHIFT:
            a = np.floor(np.clip(np.nan_to_num(a), 0, 65535) / 256.0)
        elif a.size and float(a.max()) > 255.0:
            a = a / 257.0  # 16-bit -> 8-bit
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info)
    if has_alpha and pre.alpha is not AlphaRule.DROP:
        rgba = im.convert("RGBA")
        colour = (255, 255, 255, 255) if pre.alpha is AlphaRule.WHITE else (0, 0, 0, 255)
        return Image.alpha_composite(Image.new("RGBA", rgba.size, colour), rgba).convert("RGB")
    if mode == "RGB":
        return im
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV; alpha dropped


def open_pil(source: "str | os.PathLike | bytes", pre: Preprocessing = Preprocessing()) -> Any:
    """Decode with Pillow to an RGB PIL image by ``pre``'s rules; raises ImageDecodeError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open_regular(source)
        with fp, Image.open(fp) as im:
            im.seek(0)
            im.load()
            if pre.exif is ExifRule.APPLY:
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:  # noqa: BLE001 - a broken EXIF block is not worth losing the image
                    pass
            rgb = _pil_to_rgb(im, pre)
            rgb.load()
            if rgb.width < 1 or rgb.height < 1:
                raise ImageDecodeError("empty image")
            return rgb
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"cannot decode ({exc.__class__.__name__}: {exc})") from None


def _read_bytes(source: "str | os.PathLike | bytes") -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    try:
        with open_regular(source) as fh:
            return fh.read()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read ({exc.__class__.__name__}: {exc})") from None


def _decode_cv2(source: "str | os.PathLike | bytes", pre: Preprocessing) -> np.ndarray:
    """``cv2.imread(path, IMREAD_COLOR)`` (= ``cv2.imdecode`` of the file's bytes), BGR -> RGB."""
    cv2 = _cv2()
    flags = cv2.IMREAD_COLOR | (cv2.IMREAD_IGNORE_ORIENTATION if pre.exif is ExifRule.IGNORE else 0)
    data = np.frombuffer(_read_bytes(source), np.uint8)
    try:
        bgr = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as exc:
        raise ImageDecodeError(f"cannot decode (OpenCV: {str(exc).strip().splitlines()[-1]})") from None
    if bgr is None or bgr.ndim != 3 or bgr.size == 0:
        raise ImageDecodeError("not an image OpenCV can read")
    return np.ascontiguousarray(bgr[..., ::-1], dtype=np.uint8)


def _decode_tf(source: "str | os.PathLike | bytes", pre: Preprocessing) -> np.ndarray:
    """``tf.io.decode_image(channels=3, expand_animations=False)``, as image_dataset_from_directory."""
    import tensorflow as tf

    data = _read_bytes(source)
    try:
        img = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError) as exc:
        first = (getattr(exc, "message", None) or str(exc)).strip().splitlines()[0][:120]
        raise ImageDecodeError(f"not an image TensorFlow can read ({first})") from None
    if img.ndim != 3 or img.size == 0:
        raise ImageDecodeError("empty image")
    return np.ascontiguousarray(img, dtype=np.uint8)


def decode(source: "str | os.PathLike | bytes", pre: Preprocessing = Preprocessing()) -> np.ndarray:
    """A file (or bytes) -> RGB uint8 (H, W, 3) by ``pre``'s decoder and rules; raises ImageDecodeError."""
    if pre.decode is Decoder.CV2:
        return _decode_cv2(source, pre)
    if pre.decode is Decoder.TF:
        return _decode_tf(source, pre)
    return np.asarray(open_pil(source, pre), dtype=np.uint8)


def load(source: "str | os.PathLike | bytes", size: tuple[int, int] | None, pre: Preprocessing = Preprocessing()) -> np.ndarray:
    """Decode and (optionally) resize: uint8 (H, W, 3)."""
    if pre.decode is Decoder.PIL and pre.resize.library == "pil":  # stay in Pillow: no array round trip
        im = open_pil(source, pre)
        if size is not None and (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), resample=_pil_filter(pre.resize))
        return np.asarray(im, dtype=np.uint8)
    image = decode(source, pre)
    return image if size is None else resize(image, size, pre.resize)



def open_regular(path: "str | os.PathLike") -> Any:
    """Open ``path`` for reading only if it is a regular file (a FIFO would block forever).

    Opened non-blocking, checked with ``fstat`` on the open descriptor (no race with a file
    swapped in between), then read normally. Raises :class:`ImageDecodeError` otherwise.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageDecodeError(f"cannot open ({exc.strerror or exc.__class__.__name__})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageDecodeError(f"{file_kind(mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"
