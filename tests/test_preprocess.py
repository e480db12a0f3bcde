"""Resize and decode backends, each pixel-equal to its library called directly.

Photos are scikit-learn's sample photos (427 x 640 JPEGs) re-saved as RGB, grayscale and RGBA PNGs
(and the RGB one as the original JPEG, so decoding is compared too), downscaled 2x and ~7-10x;
a small image (20 x 30) is upscaled. The reference for every backend is its library's own
pipeline: ``PIL.Image.open(...).convert("RGB").resize``, ``cv2.resize(cv2.imread(...))``,
``tf.image.resize(tf.io.decode_image(..., channels=3))``, ``keras.utils.load_img(target_size=...)``.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run

from robustlab.data import decode_image, load_image, resize_rgb
from robustlab.enums import AlphaRule, Bit16Rule, Decoder, ExifRule, ResizeMethod
from robustlab.errors import RobustlabError
from robustlab.preprocess import Preprocessing, make_preprocessing

SIZES = {"down-2x": (213, 320), "down-7x": (64, 96), "up-3x": (64, 96)}
PIL_FILTERS = {"pil-nearest": "NEAREST", "pil-bilinear": "BILINEAR", "pil-bicubic": "BICUBIC", "pil-box": "BOX"}
OLD_NAMES = {"nearest": "pil-nearest", "bilinear": "pil-bilinear", "bicubic": "pil-bicubic", "area": "pil-box"}
CV2_FLAGS = {"cv2-linear": "INTER_LINEAR", "cv2-area": "INTER_AREA", "cv2-cubic": "INTER_CUBIC"}
TF_METHODS = {"tf-bilinear": ("bilinear", False), "tf-area": ("area", False), "tf-bilinear-aa": ("bilinear", True)}
BACKENDS = [*PIL_FILTERS, *OLD_NAMES, *CV2_FLAGS, *TF_METHODS]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """{kind: {"photo": file, "small": file}} for kinds rgb, jpeg, gray, rgba."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("pre")
    sample = load_sample_images()
    photo = sample.images[0]  # china.jpg, 427 x 640
    rng = np.random.default_rng(0)
    small = np.clip(np.kron(rng.integers(0, 256, (5, 6, 3)), np.ones((4, 5, 1))) + rng.normal(0, 20, (20, 30, 3)), 0, 255).astype(np.uint8)
    out: dict[str, dict[str, Path]] = {}
    for name, arr in (("photo", photo), ("small", small)):
        h, w = arr.shape[:2]
        alpha = np.clip(np.add.outer(np.linspace(0, 255, h), np.linspace(0, 255, w)) / 2, 0, 255).astype(np.uint8)
        files = {
            "rgb": (Image.fromarray(arr), "png"),
            "gray": (Image.fromarray(arr).convert("L"), "png"),
            "rgba": (Image.fromarray(np.dstack([arr, alpha]), mode="RGBA"), "png"),
        }
        for kind, (im, ext) in files.items():
            path = root / f"{name}_{kind}.{ext}"
            im.save(path)
            out.setdefault(kind, {})[name] = path
    jpeg = root / "photo.jpg"
    shutil.copy(sample.filenames[0], jpeg)
    small_jpeg = root / "small.jpg"
    Image.fromarray(small).save(small_jpeg, quality=90)
    out["jpeg"] = {"photo": jpeg, "small": small_jpeg}
    return out


def library_pipeline(backend: str, path: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 RGB, the float result before rounding or None): the library's own decode + resize."""
    h, w = size
    if backend in OLD_NAMES:
        backend = OLD_NAMES[backend]
    if backend in PIL_FILTERS:
        from PIL import Image

        im = Image.open(path).convert("RGB")
        return np.asarray(im.resize((w, h), getattr(Image.Resampling, PIL_FILTERS[backend]))), None
    if backend in CV2_FLAGS:
        import cv2

        bgr = cv2.resize(cv2.imread(str(path)), (w, h), interpolation=getattr(cv2, CV2_FLAGS[backend]))
        return bgr[..., ::-1], None
    import tensorflow as tf

    method, antialias = TF_METHODS[backend]
    img = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
    out = tf.image.resize(img, (h, w), method=method, antialias=antialias).numpy()
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), out


def pipeline_of(backend: str) -> Preprocessing:
    """robustlab's rules for the same pipeline: each library decodes as it does (alpha dropped)."""
    library = ResizeMethod.parse(backend, what="resize").library
    return make_preprocessing(backend, decode=library, alpha="drop")


@pytest.mark.parametrize("kind", ["rgb", "jpeg", "gray", "rgba"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_is_pixel_equal_to_its_library(backend, kind, images):
    pre = pipeline_of(backend)
    for case, size in SIZES.items():
        path = images[kind]["small" if case.startswith("up") else "photo"]
        want, floats = library_pipeline(backend, path, size)
        got = load_image(path, size, pre)
        assert got.dtype == np.uint8 and got.shape == (*size, 3), case
        assert np.array_equal(got, want), f"{case}: max diff {np.abs(got.astype(int) - want.astype(int)).max()}"
        if floats is not None:  # TensorFlow's float result, rounded: never more than half a level away
            assert np.abs(got - floats).max() <= 0.5 + 1e-4
        # resizing the decoded image (the path an .npz or a corruption takes) gives the same pixels
        assert np.array_equal(resize_rgb(decode_image(path, pre), size, pre), want), case


def test_old_names_keep_meaning_pillow(images):
    path = images["rgb"]["photo"]
    for old, new in OLD_NAMES.items():
        assert np.array_equal(load_image(path, (64, 96), old), load_image(path, (64, 96), new)), old


def test_the_backends_differ_on_a_photo(images):
    """The reason they exist: on a photo the libraries' bilinear filters are far apart."""
    x = decode_image(images["rgb"]["photo"])
    out = {b: resize_rgb(x, (64, 96), b).astype(int) for b in ("pil-bilinear", "cv2-linear", "tf-bilinear", "tf-bilinear-aa")}
    assert np.abs(out["pil-bilinear"] - out["cv2-linear"]).max() > 30
    assert np.abs(out["pil-bilinear"] - out["tf-bilinear"]).max() > 30
    assert np.abs(out["cv2-linear"] - out["tf-bilinear"]).max() <= 1  # both sample 2 x 2 pixels, no antialias
    assert np.abs(out["pil-bilinear"] - out["tf-bilinear-aa"]).max() <= 2  # both antialias with a triangle


@pytest.mark.parametrize("kind", ["rgb", "gray", "rgba", "jpeg"])
def test_keras_load_img_is_pil_nearest(kind, images):
    import keras

    pre = make_preprocessing("pil-nearest", alpha="drop", bit16="clip", exif="ignore")
    for name, size in (("photo", (64, 96)), ("small", (64, 96))):
        path = images[kind][name]
        want = np.asarray(keras.utils.load_img(path, target_size=size), np.uint8)
        assert np.array_equal(load_image(path, size, pre), want), name


def test_image_dataset_from_directory_is_tf_bilinear(images, tmp_path):
    """The training pipeline itself: its float32 batches round to robustlab's tf-bilinear images."""
    import keras

    folder = tmp_path / "ds" / "real"
    folder.mkdir(parents=True)
    for i, kind in enumerate(("rgb", "gray", "rgba", "jpeg")):
        shutil.copy(images[kind]["photo"], folder / f"{i}_{images[kind]['photo'].name}")
    ds = keras.utils.image_dataset_from_directory(tmp_path / "ds", image_size=(64, 96), batch_size=8, shuffle=False)
    floats = np.concatenate([x.numpy() for x, _ in ds])
    pre = make_preprocessing("tf-bilinear", decode="tf")
    files = [str(p) for p in ds.file_paths]
    assert len(files) == 4 and floats.dtype == np.float32
    for f, x in zip(files, floats):
        got = load_image(f, (64, 96), pre)
        assert np.array_equal(got, np.clip(np.rint(x), 0, 255).astype(np.uint8)), f
        assert np.abs(got - x).max() <= 0.5 + 1e-4


def test_alpha_rules(images):
    from PIL import Image

    path = images["rgba"]["small"]
    rgba = np.asarray(Image.open(path)).astype(np.float64)
    rgb, a = rgba[..., :3], rgba[..., 3:] / 255.0
    white = decode_image(path, Preprocessing(alpha=AlphaRule.WHITE)).astype(np.float64)
    black = decode_image(path, Preprocessing(alpha=AlphaRule.BLACK)).astype(np.float64)
    drop = decode_image(path, Preprocessing(alpha=AlphaRule.DROP))
    assert np.abs(white - (rgb * a + 255 * (1 - a))).max() <= 1.0
    assert np.abs(black - rgb * a).max() <= 1.0
    assert np.array_equal(drop, rgba[..., :3].astype(np.uint8))
    assert np.abs(white - drop).max() > 200  # the seeds' apps drop alpha: up to 255 levels from white
    import cv2

    assert np.array_equal(decode_image(path, make_preprocessing(decode="cv2")), cv2.imread(str(path))[..., ::-1])


def test_bit16_rules(tmp_path):
    from PIL import Image

    a = (np.arange(40 * 50).reshape(40, 50) * 31 % 65536).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    got = {r: decode_image(path, Preprocessing(bit16=r))[..., 0].astype(np.int64) for r in Bit16Rule}
    assert np.array_equal(got[Bit16Rule.SCALE], np.round(a / 257.0).astype(np.int64))
    assert np.array_equal(got[Bit16Rule.CLIP], np.minimum(a, 255).astype(np.int64))
    assert np.array_equal(got[Bit16Rule.SHIFT], (a >> 8).astype(np.int64))
    import cv2
    import tensorflow as tf

    assert np.array_equal(decode_image(path, make_preprocessing(decode="cv2")), cv2.imread(str(path))[..., ::-1])
    assert np.array_equal(decode_image(path, make_preprocessing(decode="tf")), tf.io.decode_image(path.read_bytes(), channels=3).numpy())
    assert np.array_equal(decode_image(path, make_preprocessing(decode="cv2"))[..., 0], got[Bit16Rule.SHIFT])


def test_exif_orientation_rules(tmp_path):
    import cv2
    from PIL import Image

    x = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(x).save(path, exif=exif.tobytes(), quality=95)
    assert decode_image(path, Preprocessing(exif=ExifRule.APPLY)).shape == (30, 20, 3)
    assert decode_image(path, Preprocessing(exif=ExifRule.IGNORE)).shape == (20, 30, 3)
    assert np.array_equal(decode_image(path, make_preprocessing(decode="cv2")), cv2.imread(str(path))[..., ::-1])
    ignore = make_preprocessing(decode="cv2", exif="ignore")
    assert np.array_equal(decode_image(path, ignore), cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)[..., ::-1])


def test_unreadable_files_raise_decode_error_with_every_decoder(tmp_path):
    from robustlab.data import ImageDecodeError

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for dec in Decoder:
        with pytest.raises(ImageDecodeError):
            decode_image(bad, make_preprocessing(decode=str(dec)))


def test_library_decoders_refuse_rules_they_do_not_have():
    with pytest.raises(RobustlabError, match="decode: cv2 always gives alpha drop"):
        make_preprocessing(decode="cv2", alpha="white")
    with pytest.raises(RobustlabError, match="decode: tf always gives exif ignore"):
        make_preprocessing(decode="tf", exif="apply")
    assert make_preprocessing(decode="cv2") == Preprocessing(ResizeMethod.BILINEAR, Decoder.CV2, AlphaRule.DROP, Bit16Rule.SHIFT, ExifRule.APPLY)
    assert make_preprocessing() == Preprocessing()  # today's rules by default


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    from conftest import tiny_cnn

    path = tmp_path / "m.keras"
    tiny_cnn(16).save(path)
    return path


@pytest.mark.parametrize(
    "line, needles",
    [
        ("decode: cv2\nalpha: white\n", ("alpha: white but decode: cv2",)),
        ("resize: cv2-bilinear\n", ("unknown resize method 'cv2-bilinear'", "cv2-linear")),
        ("alpha: yes\n", ("unknown alpha",)),
        ("bit16: [clip]\n", ("bit16 ['clip'] is not text",)),
        ("decode: opencv\n", ("unknown decoder 'opencv'",)),
    ],
    ids=["cv2-alpha", "resize-name", "alpha-bool", "bit16-list", "decoder"],
)
def test_bad_preprocessing_keys_exit_2(line, needles, tiny_model, tmp_path):
    spec = tmp_path / "d.yaml"
    spec.write_text(f"model: m.keras\n{line}")
    res = run("inspect", str(spec))
    assert_one_line_error(res, *needles)
    for needle in needles:
        assert needle in res.output
    assert "d.yaml" in res.output


@pytest.mark.parametrize("line", ["resize: cv2-area\n", "decode: cv2\n"])
def test_without_opencv_cv2_rules_name_the_extra(line, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError, as without the wheel
    spec = tmp_path / "d.yaml"
    spec.write_text(f"model: m.keras\n{line}")
    res = run("inspect", str(spec))
    assert_one_line_error(res)
    assert "pip install 'robustlab[cv2]'" in res.output and "d.yaml" in res.output
    assert run("inspect", str(tiny_model)).exit_code == 0  # Pillow and TensorFlow backends need no OpenCV
