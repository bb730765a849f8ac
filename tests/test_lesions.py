"""Lesions inserted into healthy scans: each model's mask is where the image changed, twins equal positives
outside the mask (after augmentation and 8-bit rounding), no source slice in two splits or two classes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from medxgan.data.lesion_dataset import LesionDatasetConfig, synthesize_lesions
from medxgan.data.lesions import LESION_MODELS, LesionConfig, insert_lesions, lesion
from medxgan.data.phantoms.common import smooth_noise
from medxgan.runtime.errors import MedxganError

SIZE = 48


def textured_base(seed: int = 0) -> np.ndarray:
    """A scan-like texture in [0.15, 0.85] with a black border (background, where nothing can change)."""
    rng = np.random.default_rng(seed)
    a = 0.5 + 0.12 * smooth_noise(rng, SIZE, 0.1) + 0.04 * rng.standard_normal((SIZE, SIZE))
    a = np.clip(a, 0.15, 0.85).astype(np.float32)
    a[:4], a[-4:], a[:, :4], a[:, -4:] = 0, 0, 0, 0
    return a


@pytest.mark.parametrize("model", LESION_MODELS)
def test_each_model_mask_is_where_the_image_changed(model):
    base = textured_base()
    img, mask = lesion(model, np.random.default_rng(3), base, (0.1, -0.1), 0.25)
    changed = np.abs(img - base) > 0.01
    assert mask.any() and np.array_equal(img[~mask], base[~mask])  # outside the mask: untouched, bit for bit
    if model == "mass":  # + where the anatomy moved by more than half a pixel, even where that did not change a pixel
        assert (changed <= mask).all() and changed.sum() > 0.5 * mask.sum()
    else:
        assert np.array_equal(mask, changed)
    assert img.min() >= 0.0 and img.max() <= 1.0


def test_models_do_what_they_say():
    base = textured_base()
    centre = (0.0, 0.0)
    mid = (slice(SIZE // 2 - 1, SIZE // 2 + 1),) * 2
    hyper, _ = lesion("hyper", np.random.default_rng(1), base, centre, 0.3)
    hypo, _ = lesion("hypo", np.random.default_rng(1), base, centre, 0.3)
    assert (hyper[mid] - base[mid]).min() > 0.1 and (hypo[mid] - base[mid]).max() < -0.1
    # texture-preserving: a multiplicative change; the ratio to the scan does not depend on the scan's texture
    other = textured_base(seed=5)
    t1, m1 = lesion("texture", np.random.default_rng(2), base, centre, 0.3)
    t2, m2 = lesion("texture", np.random.default_rng(2), other, centre, 0.3)
    both = m1 & m2 & (t1 < 1) & (t2 < 1) & (t1 > 0) & (t2 > 0)
    assert both.sum() > 20
    np.testing.assert_allclose(t1[both] / base[both], t2[both] / other[both], rtol=1e-5)
    # ring-enhancing: brighter rim, darker core
    ring, rm = lesion("ring", np.random.default_rng(4), base, centre, 0.35)
    d = ring - base
    assert d[mid].mean() < -0.05 and d[rm].max() > 0.15
    # subtle: near the noise level
    sub, sm = lesion("subtle", np.random.default_rng(5), base, centre, 0.3)
    assert 0.01 < np.abs(sub - base)[sm].max() <= 0.06 + 1e-6


def test_several_lesions_union_mask_and_region():
    base = textured_base()
    region = np.zeros((SIZE, SIZE), bool)
    region[10:20, 10:20] = True
    img, mask, models = insert_lesions(np.random.default_rng(0), base, region, LesionConfig(p_multiple=1.0, max_lesions=3))
    assert 2 <= len(models) <= 3 and mask.any()
    assert np.array_equal(img[~mask], base[~mask])
    with pytest.raises(MedxganError, match="region"):
        insert_lesions(np.random.default_rng(0), base, np.zeros_like(region))


def write_volume(path, seed, shape=(40, 44, 36)):
    """A synthetic 'head': an ellipsoid of smooth texture on black."""
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = x**2 / 0.8 + y**2 / 0.85 + z**2 / 0.9 < 0.9
    tex = 100 + 20 * np.sin(6 * x + 4 * y + seed) * np.cos(5 * z) + rng.normal(0, 3, shape)
    nib.save(nib.Nifti1Image((inside * tex).astype(np.float32), np.eye(4)), str(path))
    return path


def read_png(path):
    return np.asarray(Image.open(path), dtype=np.int16)


def test_dataset_twins_masks_and_splits(tmp_path):
    vol = write_volume(tmp_path / "head.nii.gz", 0)
    cfg = LesionDatasetConfig(n=60, size=32, seed=3, slab=4, gap=1)
    s = synthesize_lesions([vol], tmp_path / "out", cfg, preview=True, show_progress=False)
    root = tmp_path / "out"
    assert s["split_by"] == "slab" and (root / "preview.png").is_file()
    rows = list(csv.DictReader(open(root / "sources.csv")))
    assert len(rows) == s["n"]
    split_of, label_of = {}, {}
    for r in rows:
        key = (r["subject"], r["slice"])
        split_of.setdefault(key, set()).add(r["split"])
        label_of.setdefault(key, set()).add(r["class"])
        img, mask = read_png(root / r["path"]), read_png(root / "masks" / r["path"]) > 0
        if r["class"] == "positive":
            twin = read_png(root / "twins" / r["path"])
            assert mask.any()
            assert np.array_equal(img[~mask], twin[~mask])  # equal outside the mask, after augmentation and rounding
            assert (img[mask] != twin[mask]).mean() > 0.5
        else:
            assert not mask.any() and not (root / "twins" / r["path"]).exists()
    assert all(len(v) == 1 for v in split_of.values())  # no source slice in two splits
    assert all(len(v) == 1 for v in label_of.values())  # a negative or a positive, never both
    # slabs: slices of different splits are more than `gap` apart
    by_split = {sp: sorted(int(k[1]) for k, v in split_of.items() if sp in v) for sp in ("train", "val", "test")}
    for a in by_split:
        for b in by_split:
            if a < b:
                assert min(abs(i - j) for i in by_split[a] for j in by_split[b]) > cfg.gap
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["twins"] == "twins" and meta["positive"] == ["positive"]

    from medxgan.data import load_dataset

    ds = load_dataset(root, split="test")
    _, has = ds.twins()
    assert has.sum() == sum(ds.labels) > 0
    # same seed, same files
    synthesize_lesions([vol], tmp_path / "again", cfg, show_progress=False)
    for r in rows[:10]:
        assert (root / r["path"]).read_bytes() == (tmp_path / "again" / r["path"]).read_bytes()


def test_split_by_subject(tmp_path):
    vols = [write_volume(tmp_path / f"s{k}.nii.gz", k, shape=(24, 26, 20)) for k in range(4)]
    s = synthesize_lesions(vols, tmp_path / "out", LesionDatasetConfig(n=60, size=32, seed=0), show_progress=False)
    assert s["split_by"] == "subject"
    rows = list(csv.DictReader(open(tmp_path / "out" / "sources.csv")))
    splits = {}
    for r in rows:
        splits.setdefault(r["subject"], set()).add(r["split"])
    assert all(len(v) == 1 for v in splits.values()) and {next(iter(v)) for v in splits.values()} == {"train", "val", "test"}


def test_cli_synth_lesions_errors(tmp_path, capsys):
    from medxgan.cli import main

    assert main(["synth", "lesions", str(tmp_path / "none.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "none.nii.gz" in capsys.readouterr().err
    vol = write_volume(tmp_path / "head.nii.gz", 0)
    assert main(["synth", "lesions", str(vol), "--out", str(tmp_path / "o"), "--models", "hyper,blob"]) == 2
    assert "--models" in capsys.readouterr().err
    assert main(["synth", "lesions", str(vol), "--out", str(tmp_path / "o"), "--region-labels", "1"]) == 2
    assert not (tmp_path / "o").exists()
    assert main(["synth", "lesions", str(vol), "--out", str(tmp_path / "o"), "--n", "40", "--size", "32", "--slab", "4", "--quiet"]) == 0
    assert "split by slab" in capsys.readouterr().out


def test_region_labels_confine_the_lesions(tmp_path):
    nib = pytest.importorskip("nibabel")
    from medxgan.data.lesion_dataset import AugmentConfig

    vol = write_volume(tmp_path / "head.nii.gz", 1)
    labels = np.zeros((40, 44, 36), np.int16)
    labels[:20], labels[20:] = 2, 1  # x < 20: the image's left half (columns run along x)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / "atlas.nii.gz"))
    cfg = LesionDatasetConfig(n=40, size=32, seed=0, slab=4, gap=1, augment=AugmentConfig(p_flip=0.0))
    synthesize_lesions([vol], tmp_path / "out", cfg, regions=[str(tmp_path / "atlas.nii.gz")], region_labels=[2], show_progress=False)
    rows = [r for r in csv.DictReader(open(tmp_path / "out" / "sources.csv")) if r["class"] == "positive"]
    assert rows
    for r in rows:
        m = read_png(tmp_path / "out" / "masks" / r["path"]) > 0
        assert np.nonzero(m)[1].mean() < 32 * 0.55, r["path"]


def test_folders_of_2d_images_are_subjects(tmp_path):
    """Folders of PNG slices: one subject each (three -> split by subject); twins still equal outside the masks."""
    srcs = []
    for k in range(3):
        d = tmp_path / f"subject{k}"
        d.mkdir()
        for j in range(4):
            a = (textured_base(seed=10 * k + j) * 255).astype(np.uint8)
            Image.fromarray(a).save(d / f"slice{j}.png")
        srcs.append(d)
    s = synthesize_lesions(srcs, tmp_path / "out", LesionDatasetConfig(n=24, size=32, seed=1), show_progress=False)
    assert s["split_by"] == "subject" and s["n_sources"] == 12
    with open(tmp_path / "out" / "sources.csv") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        if r["class"] == "positive":
            img, twin = read_png(tmp_path / "out" / r["path"]), read_png(tmp_path / "out" / "twins" / r["path"])
            mask = read_png(tmp_path / "out" / "masks" / r["path"]) > 0
            assert mask.any() and np.array_equal(img[~mask], twin[~mask])
