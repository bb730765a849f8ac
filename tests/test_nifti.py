"""NIfTI volumes as 2-D slices: orientation, square pixels, foreground windowing, skipping, the dataset index, errors.

The reference values are computed by hand from a tiny volume (6 x 4 x 5 voxels of 1 x 2 x 1 mm) whose
foreground is a block of the values 100..147.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from medxgan.data import (
    collect_image_files,
    load_dataset,
    probe_image,
    read_image,
    read_mask,
)
from medxgan.data.nifti import NiftiOptions, expand_volume, split_ref, square_pixels
from medxgan.runtime.errors import MedxganError

LO = 100 + 0.005 * 47  # the 0.5th / 99.5th percentiles of 100..147 (linear interpolation: position p * (n - 1))
HI = 100 + 0.995 * 47


def block_volume() -> np.ndarray:
    """X x Y x Z = 6 x 4 x 5; block x 1..4, all y, z 1..3 holds 100 + (x - 1) + 4 y + 16 (z - 1); zero elsewhere."""
    a = np.zeros((6, 4, 5), np.float32)
    for x in range(1, 5):
        for y in range(4):
            for z in range(1, 4):
                a[x, y, z] = 100 + (x - 1) + 4 * y + 16 * (z - 1)
    return a


def save(path, data, zooms=(1.0, 2.0, 1.0), flip_x=False):
    aff = np.diag([(-1.0 if flip_x else 1.0) * zooms[0], zooms[1], zooms[2], 1.0])
    nib.save(nib.Nifti1Image(data, aff), str(path))
    return path


def w(v):
    return (v - LO) / (HI - LO)


def test_slicing_spacing_and_windowing_by_hand(tmp_path):
    vol = save(tmp_path / "vol.nii.gz", block_volume())
    refs = collect_image_files(vol)
    assert [r.name for r in refs] == ["vol.nii.gz#z=1", "vol.nii.gz#z=2", "vol.nii.gz#z=3"]  # z = 0, 4: no foreground
    img = read_image(refs[1])  # z = 2
    # rows: y from 3 (top) down to 0, each 2 mm -> 2 pixels; columns: x 0..5 at 1 mm
    assert img.shape == (8, 6, 1)
    assert probe_image(refs[1]) == probe_image(refs[1]).__class__(8, 6, 1)
    # pixel centres: output row i samples input row (i + 0.5) / 2 - 0.5, clamped at the edges
    assert img[0, 1, 0] == pytest.approx(w(128), abs=1e-6)  # y = 3, x = 1, z = 2: 100 + 0 + 12 + 16
    assert img[1, 1, 0] == pytest.approx(w(0.75 * 128 + 0.25 * 124), abs=1e-6)  # a quarter of the way to y = 2
    assert img[7, 4, 0] == pytest.approx(w(100 + 3 + 0 + 16), abs=1e-6)  # y = 0, x = 4
    assert img[3, 0, 0] == 0.0 and img[3, 5, 0] == 0.0  # background below the window
    # the window is the volume's, not the slice's: the same value maps to the same intensity on every slice
    z1, z3 = read_image(refs[0]), read_image(refs[2])
    assert z1[0, 1, 0] == pytest.approx(w(112), abs=1e-6) and z3[0, 1, 0] == pytest.approx(w(144), abs=1e-6)
    assert z3[0, 4, 0] == 1.0  # 147 > HI: clipped


def test_square_pixels_by_hand():
    assert square_pixels(np.array([[0.0], [4.0]]), 2.0, 1.0).ravel().tolist() == [0.0, 1.0, 3.0, 4.0]
    assert square_pixels(np.array([[0.0, 4.0]]), 1.0, 2.0).ravel().tolist() == [0.0, 1.0, 3.0, 4.0]
    same = np.arange(6.0).reshape(2, 3)
    assert square_pixels(same, 1.5, 1.5) is same


def test_orientation_from_the_affine(tmp_path):
    a = block_volume()
    ras = read_image(save(tmp_path / "ras.nii.gz", a).as_posix() + "#z=2")
    las = read_image(save(tmp_path / "las.nii.gz", a[::-1].copy(), flip_x=True).as_posix() + "#z=2")  # same anatomy, x stored reversed
    np.testing.assert_array_equal(ras, las)


def test_other_axes_and_min_foreground(tmp_path):
    vol = save(tmp_path / "vol.nii.gz", block_volume())
    assert [split_ref(r)[3] for r in expand_volume(vol, NiftiOptions(axis="x"))] == [1, 2, 3, 4]
    sag = read_image(f"{vol}#x=1")  # plane (Y, Z) -> rows z (top = superior), columns y at 2 mm -> made 1 mm
    assert sag.shape == (5, 8, 1)
    assert [split_ref(r)[3] for r in expand_volume(vol, NiftiOptions(axis="y", min_foreground=0.4))] == [0, 1, 2, 3]
    with pytest.raises(MedxganError, match="no y slice"):
        expand_volume(vol, NiftiOptions(axis="y", min_foreground=0.5))  # each coronal slice: 12 of 30 voxels (0.4)


def test_load_dataset_reads_volumes_in_class_folders(tmp_path):
    root = tmp_path / "data"
    for cls in ("negative", "positive"):
        (root / cls).mkdir(parents=True)
        save(root / cls / f"{cls[:3]}.nii.gz", block_volume())
    lab = np.zeros((6, 4, 5), np.uint8)
    lab[2, 1, 2] = 1
    (root / "masks" / "positive").mkdir(parents=True)
    save(root / "masks" / "positive" / "pos.nii.gz", lab)
    ds = load_dataset(root)
    assert sorted(p.rsplit("/", 1)[1] for p in ds.paths) == sorted(f"{c}.nii.gz#z={z}" for c in ("neg", "pos") for z in (1, 2, 3))
    by_volume = {}
    for s in ds.samples:  # the flat layout's hash split hashes the volume: its slices never straddle splits
        by_volume.setdefault(s.rel.split("#")[0], set()).add(s.split)
    assert all(len(v) == 1 for v in by_volume.values())
    images, labels, masks, has = ds.tensors()
    assert images.shape == (6, 1, 8, 6) and labels.tolist().count(1) == 3
    i = next(k for k, s in enumerate(ds.samples) if s.rel.endswith("pos.nii.gz#z=2"))
    # voxel (x=2, y=1) -> rows 4..5 (y = 1 of 3..0, two pixels each), column 2; the other slices' masks are empty
    assert has[i] and masks[i, 0].nonzero().tolist() == [[4, 2], [5, 2]]
    assert read_mask(root / "masks" / "positive" / "pos.nii.gz#z=1").sum() == 0


def test_bad_volumes_give_one_line_naming_the_file(tmp_path):
    four = save(tmp_path / "four.nii.gz", np.stack([block_volume(), 2 * block_volume()], axis=-1))
    with pytest.raises(MedxganError, match=r"four\.nii\.gz.*2 frames"):
        collect_image_files(four)
    np.testing.assert_allclose(read_image(f"{four}#t=1,z=2"), read_image(f"{four}#t=0,z=2"), atol=1e-6)  # windowed per frame
    nan = block_volume()
    nan[2, 2, 2] = np.nan
    with pytest.raises(MedxganError, match=r"nan\.nii\.gz.*NaN"):
        read_image(save(tmp_path / "nan.nii.gz", nan).as_posix() + "#z=2")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(MedxganError, match=r"garbage\.nii\.gz: not a readable NIfTI"):
        read_image(f"{garbage}#z=0")
    img = nib.Nifti1Image(block_volume(), np.eye(4))
    img.header["pixdim"][1:4] = [1.0, np.nan, 1.0]  # (nibabel itself repairs zero or negative sizes, with a warning)
    nib.save(img, str(tmp_path / "zero.nii.gz"))
    with pytest.raises(MedxganError, match=r"zero\.nii\.gz.*spacing"):
        read_image(tmp_path / "zero.nii.gz#z=2")
    with pytest.raises(MedxganError, match=r"empty\.nii\.gz.*non-empty"):
        read_image(save(tmp_path / "empty.nii.gz", np.zeros((0, 4, 5), np.float32)).as_posix() + "#z=0")
    with pytest.raises(MedxganError, match="out of range"):
        read_image(f"{tmp_path / 'four.nii.gz'}#t=0,z=9")
    with pytest.raises(MedxganError, match="slice reference"):
        read_image(f"{tmp_path / 'four.nii.gz'}#slice=2")


def test_output_names_and_source_files_of_slice_references(tmp_path):
    from medxgan.data.imageio import image_stem, source_file

    assert image_stem("/a/brain.nii.gz#z=42") == "brain#z=42" and image_stem("/a/b.png") == "b"
    assert source_file("/a/brain.nii.gz#t=0,z=42") == Path("/a/brain.nii.gz") and source_file("/a/b.png") == Path("/a/b.png")


def test_a_2d_nifti_is_one_slice(tmp_path):
    from medxgan.data import load_image_tensor

    plane = block_volume()[:, :, 2]
    p = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(plane, np.diag([1.0, 2.0, 1.0, 1.0])), str(p))
    assert [r.name for r in collect_image_files(p)] == ["flat.nii#z=0"]
    x = load_image_tensor(p)  # a bare file with one slice is that slice
    assert x.shape == (1, 1, 8, 6)
    with pytest.raises(MedxganError, match=r"a NIfTI volume of 5 slices: name one slice"):
        load_image_tensor(save(tmp_path / "vol.nii.gz", block_volume()))
