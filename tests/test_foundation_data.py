"""Data sets: layouts, decoding rules, streaming, skipped files, bad input."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, write_class_folder
from PIL import Image

from robustlab.data import decode_image, open_dataset
from robustlab.errors import RobustlabError


def _save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


# --------------------------------------------------------------------------- decoding rules


def test_grayscale_is_replicated(tmp_path):
    g = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    out = decode_image(_save(Image.fromarray(g, "L"), tmp_path / "g.png"))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out[..., 0] == g).all() and (out[..., 1] == g).all() and (out[..., 2] == g).all()


def test_rgba_is_composited_on_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 200  # red, fully transparent except one pixel
    a[0, 0, 3] = 255
    out = decode_image(_save(Image.fromarray(a, "RGBA"), tmp_path / "a.png"))
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[1, 1]) == (255, 255, 255)


def test_palette_with_transparency_and_cmyk(tmp_path):
    p = Image.new("P", (4, 4), 0)
    p.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    p.info["transparency"] = 1
    assert tuple(decode_image(_save(p, tmp_path / "p.png"))[0, 0]) == (10, 20, 30)
    c = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(_save(c, tmp_path / "c.jpg", quality=100))
    assert out.shape == (4, 4, 3)
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 60


def test_16bit_is_scaled_to_8bit(tmp_path):
    a = np.full((4, 4), 65535, np.uint16)
    a[0, 0] = 0
    out = decode_image(_save(Image.fromarray(a), tmp_path / "d.png"))
    assert out.dtype == np.uint8 and out[1, 1, 0] == 255 and out[0, 0, 0] == 0


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((2, 4, 3), np.uint8)  # 2 rows, 4 columns
    a[0, 0] = 255
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes(), quality=100)
    out = decode_image(buf.getvalue())
    assert out.shape == (4, 2, 3)


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("names", [("real", "fake"), ("REAL", "FAKE"), ("Real", "Fake"), ("0_real", "1_fake")], ids=lambda n: "/".join(n))
def test_class_folder_names(tmp_path, names):
    x, y = make_images(3, seed=2)
    write_class_folder(tmp_path / "d", x, y, names=names)
    ds = open_dataset(tmp_path / "d")
    assert len(ds) == 6 and ds.counts == {"real": 3, "fake": 3}
    fake_paths = [p for p, label in zip(ds.paths, ds.labels) if label == 1]
    assert all(p.startswith(names[1] + "/") for p in fake_paths)


def test_classes_mapping(tmp_path):
    x, y = make_images(2, seed=3)
    write_class_folder(tmp_path / "d", x, y, names=("authentic", "generated"))
    with pytest.raises(RobustlabError, match="--classes"):
        open_dataset(tmp_path / "d")
    ds = open_dataset(tmp_path / "d", classes="real=authentic,fake=generated")
    assert ds.counts == {"real": 2, "fake": 2}


def test_split_root(tmp_path):
    x, y = make_images(2, seed=4)
    write_class_folder(tmp_path / "root" / "train", x, y)
    write_class_folder(tmp_path / "root" / "Validation", x[:2], np.array([0, 1]))
    with pytest.raises(RobustlabError, match="--split"):
        open_dataset(tmp_path / "root")
    assert len(open_dataset(tmp_path / "root", split="validation")) == 2
    assert len(open_dataset(tmp_path / "root", split="train")) == 4
    with pytest.raises(RobustlabError, match="no split folder"):
        open_dataset(tmp_path / "root", split="test")


def test_manifest_and_npz(tmp_path):
    x, y = make_images(3, seed=5)
    folder = write_class_folder(tmp_path / "imgs", x, y)
    rows = ["path,label"] + [f"imgs/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(folder.rglob("*.png"))]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    ds = open_dataset(tmp_path / "m.csv")
    assert ds.kind == "manifest" and ds.counts == {"real": 3, "fake": 3}
    b = ds.load_arrays((32, 32))
    assert b.x.shape == (6, 32, 32, 3)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    dz = open_dataset(tmp_path / "d.npz")
    bz = dz.load_arrays((16, 16))
    assert bz.x.shape == (6, 16, 16, 3) and bz.x.dtype == np.uint8
    assert (bz.y == y).all()


def test_batches_stream_in_order_and_resize(tmp_path):
    x, y = make_images(10, size=40, seed=6)
    ds = open_dataset(write_class_folder(tmp_path / "d", x, y))
    seen = []
    for b in ds.batches((24, 20), batch_size=7):
        assert b.x.dtype == np.uint8 and b.x.shape[1:] == (24, 20, 3) and len(b.x) <= 7
        assert (b.y == ds.labels[b.idx]).all()
        seen.extend(b.idx.tolist())
    assert seen == list(range(len(ds)))


def test_unreadable_files_are_skipped_once(tmp_path, capsys):
    x, y = make_images(3, seed=8)
    root = write_class_folder(tmp_path / "d", x, y)
    (root / "fake" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "real" / "notes.txt").write_text("hello")
    ds = open_dataset(root)
    for _ in range(2):  # two passes: named once
        b = ds.load_arrays((32, 32))
    assert len(b.x) == 6
    assert set(ds.skipped) == {"fake/broken.png", "real/notes.txt"}
    err = capsys.readouterr().err
    assert err.count("broken.png") == 1 and err.count("notes.txt") == 1
    assert ds.describe()["skipped"] == 2


def test_fingerprint_tracks_content(tmp_path):
    x, y = make_images(3, seed=9)
    a = open_dataset(write_class_folder(tmp_path / "a", x, y))
    b = open_dataset(write_class_folder(tmp_path / "b", x, y))
    assert a.fingerprint() == b.fingerprint()  # same files, other place
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "b" / "real" / "extra.png")
    assert open_dataset(tmp_path / "b").fingerprint() != a.fingerprint()


# --------------------------------------------------------------------------- bad input


def test_bad_data_messages(tmp_path):
    with pytest.raises(RobustlabError, match="no such file"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RobustlabError, match="not real/fake|no images"):
        open_dataset(tmp_path / "empty")
    x, y = make_images(2, seed=10)
    write_class_folder(tmp_path / "one", x[y == 0], y[y == 0])
    with pytest.raises(RobustlabError, match="only one class"):
        open_dataset(tmp_path / "one")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(RobustlabError, match="manifest .csv or an .npz"):
        open_dataset(tmp_path / "x.txt")
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 4, 4, 3), np.float32), y=np.array([0, 1]))
    with pytest.raises(RobustlabError, match="uint8"):
        open_dataset(tmp_path / "bad.npz")
    (tmp_path / "m.csv").write_text("file,class\na.png,0\n")
    with pytest.raises(RobustlabError, match="path,label"):
        open_dataset(tmp_path / "m.csv")
