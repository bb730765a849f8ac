"""File formats -> arrays/tensors (medxgan.data.imageio). Every test writes its own tiny files."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from medxgan.data import (
    collect_image_files,
    image_to_tensor,
    load_image_tensor,
    probe_image,
    read_image,
    read_mask,
    resize_mask,
)
from medxgan.runtime.errors import MedxganError


# ---------------------------------------------------------------------------------- Pillow formats


def test_png_8bit_gray(tmp_path):
    a = np.array([[0, 51, 255], [128, 0, 255]], dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "g.png")
    x = read_image(tmp_path / "g.png")
    assert x.dtype == np.float32 and x.shape == (2, 3, 1)
    np.testing.assert_allclose(x[..., 0], a / 255.0, atol=1e-6)


@pytest.mark.parametrize("ext", ["png", "tif", "TIFF"])
def test_16bit_scaled_by_65535(tmp_path, ext):
    a = np.array([[0, 32768, 65535]], dtype=np.uint16)
    p = tmp_path / f"g16.{ext}"
    Image.fromarray(a).save(p)
    x = read_image(p)
    assert x.shape == (1, 3, 1)
    assert x[0, 0, 0] == 0.0 and x[0, 2, 0] == pytest.approx(1.0)
    assert x[0, 1, 0] == pytest.approx(0.5, abs=1e-4)
    # dark 16-bit image stays dark (no min-max stretch)
    Image.fromarray(np.array([[0, 1000]], dtype=np.uint16)).save(p)
    assert read_image(p).max() == pytest.approx(1000 / 65535, rel=1e-5)


def test_8bit_tiff_bmp_rgb_png(tmp_path):
    a = np.array([[10, 200]], dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "g.tif")
    Image.fromarray(a).save(tmp_path / "g.BMP")
    for name in ("g.tif", "g.BMP"):
        np.testing.assert_allclose(read_image(tmp_path / name)[..., 0], a / 255.0, atol=1e-6)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    Image.fromarray(rgb).save(tmp_path / "c.png")
    x = read_image(tmp_path / "c.png")
    assert x.shape == (2, 2, 3)
    np.testing.assert_allclose(x[0, 0], [1.0, 128 / 255, 0.0], atol=1e-6)


def test_jpeg_gray_and_rgb(tmp_path):
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "g.jpg", quality=95)
    Image.fromarray(np.full((8, 8, 3), (200, 50, 10), np.uint8)).save(tmp_path / "c.JPEG", quality=95)
    g, c = read_image(tmp_path / "g.jpg"), read_image(tmp_path / "c.JPEG")
    assert g.shape == (8, 8, 1) and c.shape == (8, 8, 3)
    assert abs(g.mean() - 100 / 255) < 0.02
    np.testing.assert_allclose(c.mean(axis=(0, 1)), np.array([200, 50, 10]) / 255, atol=0.03)


def test_rgba_and_palette_to_rgb(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 0  # fully transparent red: alpha dropped
    Image.fromarray(rgba).save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png")
    assert x.shape == (2, 2, 3)
    np.testing.assert_allclose(x[0, 0], [1, 0, 0])
    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "p.png")
    y = read_image(tmp_path / "p.png")
    assert y.shape == (2, 2, 3)
    np.testing.assert_allclose(y[1, 1], [0, 1, 0])
    np.testing.assert_allclose(y[0, 0], [0, 0, 0])


# ---------------------------------------------------------------------------------- DICOM


RAW = np.array([[0, 1000, 2000, 3000]], dtype=np.uint16)  # * 2 - 1000 -> -1000, 1000, 3000, 5000


def test_dicom_monochrome2_rescale_and_window(tmp_path, write_dicom):
    p = write_dicom(tmp_path / "m2.dcm", RAW, RescaleSlope=2, RescaleIntercept=-1000,
                    WindowCenter=1000, WindowWidth=4000)  # window [-1000, 3000]
    x = read_image(p)
    assert x.shape == (1, 4, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0], [0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_dicom_monochrome1_inverted_and_multivalued_window(tmp_path, write_dicom):
    p = write_dicom(tmp_path / "m1.DCM", RAW, photometric="MONOCHROME1", RescaleSlope=2, RescaleIntercept=-1000,
                    WindowCenter=[1000, 40], WindowWidth=[4000, 80])  # the first window is used
    np.testing.assert_allclose(read_image(p)[0, :, 0], [1.0, 0.5, 0.0, 0.0], atol=1e-6)


def test_dicom_percentile_window_without_tags(tmp_path, write_dicom):
    a = np.arange(1000, dtype=np.uint16).reshape(10, 100) * 10 + 5000  # no window, no rescale
    x = read_image(write_dicom(tmp_path / "p.dcm", a))[..., 0]
    lo, hi = np.percentile(a.astype(float), [0.5, 99.5])
    np.testing.assert_allclose(x, np.clip((a - lo) / (hi - lo), 0, 1), atol=1e-5)
    assert x.min() == 0.0 and x.max() == 1.0


def test_dicom_without_pydicom_names_extra(tmp_path, write_dicom, monkeypatch):
    p = write_dicom(tmp_path / "m.dcm", RAW)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    with pytest.raises(MedxganError, match=r"m\.dcm.*medxgan\[dicom\]"):
        read_image(p)


def test_dicom_rgb(tmp_path, write_dicom):
    a = np.zeros((2, 3, 3), np.uint8)
    a[..., 1] = 255
    p = write_dicom(tmp_path / "rgb.dcm", a, photometric="RGB")
    x = read_image(p)
    assert x.shape == (2, 3, 3)
    np.testing.assert_allclose(x[0, 0], [0, 1, 0])
    assert probe_image(p).channels == 3
    assert load_image_tensor(p, channels=1).shape == (1, 1, 2, 3)


# ---------------------------------------------------------------------------------- tensors


def test_load_image_tensor_resize_and_channels(tmp_path):
    a = np.zeros((20, 40), np.uint8)
    a[:, 20:] = 255
    Image.fromarray(a).save(tmp_path / "h.png")
    t = load_image_tensor(tmp_path / "h.png", size=10, channels=3)
    assert t.shape == (1, 3, 10, 10) and t.dtype == torch.float32
    assert t.min() == -1.0 and t.max() == 1.0
    assert torch.equal(t[:, 0], t[:, 1])
    assert load_image_tensor(tmp_path / "h.png").shape == (1, 1, 20, 40)
    assert load_image_tensor(tmp_path / "h.png", size=(5, 8)).shape == (1, 1, 5, 8)
    rgb = np.zeros((1, 1, 3), np.float32)
    rgb[0, 0] = [1.0, 0.0, 0.0]
    assert image_to_tensor(rgb, channels=1).item() == pytest.approx(0.2989 * 2 - 1, abs=1e-6)
    with pytest.raises(MedxganError, match="channels"):
        image_to_tensor(rgb, channels=2)


def test_mask_nearest_resize(tmp_path):
    m = np.zeros((4, 4), np.uint8)
    m[:2, :2] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.dtype == bool and mask.sum() == 4
    big = resize_mask(mask, 8)
    assert big.shape == (8, 8) and big[:4, :4].all() and big.sum() == 16


# ---------------------------------------------------------------------------------- bad inputs


def _png_bytes():
    buf = io.BytesIO()
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(buf, format="PNG")
    return buf.getvalue()


def test_truncated_png_and_text_file_named_png(tmp_path):
    data = _png_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.png").write_text("this is not an image")
    for name in ("trunc.png", "notes.png"):
        with pytest.raises(MedxganError, match=name):
            read_image(tmp_path / name)
        with pytest.raises(MedxganError, match=name):
            probe_image(tmp_path / name)
    pytest.importorskip("pydicom")
    (tmp_path / "x.dcm").write_text("not dicom")
    with pytest.raises(MedxganError, match="x.dcm"):
        read_image(tmp_path / "x.dcm")
    with pytest.raises(MedxganError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_collect_image_files(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for p in ("d/b.PNG", "d/sub/a.dcm", "d/readme.txt", "one.jpg"):
        (tmp_path / p).write_bytes(b"x")
    files = collect_image_files([tmp_path / "one.jpg", tmp_path / "d", tmp_path / "d" / "b.PNG"])
    assert [f.name for f in files] == ["one.jpg", "b.PNG", "a.dcm"]
    assert collect_image_files(str(tmp_path / "one.jpg"))[0].name == "one.jpg"
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedxganError, match="empty"):
        collect_image_files([tmp_path / "empty"])
    with pytest.raises(MedxganError, match="nope"):
        collect_image_files([tmp_path / "nope.png"])
    with pytest.raises(MedxganError, match="readme.txt"):
        collect_image_files([tmp_path / "d" / "readme.txt"])


@pytest.mark.parametrize("name, module, extra", [("x.dcm", "pydicom", "dicom"), ("v.nii.gz", "nibabel", "nifti")])
def test_missing_reader_library_is_one_line(tmp_path, monkeypatch, name, module, extra):
    """Without the optional library, reading a file that needs it names the file, the library and the extra."""
    (tmp_path / name).write_bytes(b"x")
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(MedxganError, match=rf"{name}: reading .* needs {module}: pip install 'medxgan\[{extra}\]'"):
        probe_image(tmp_path / name)
