"""Dataset layouts -> index -> tensors (medxgan.data.layout / datasets). Tiny files written per test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medxgan.data import hash_split, load_dataset
from medxgan.runtime.errors import MedxganError


def png(path, value=128, size=(8, 8), rgb=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size + ((3,) if rgb else ())
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


def make_tree(root, layout):
    """layout: {"train/notumor": 2, ...} -> that many 8x8 PNGs per folder."""
    for folder, n in layout.items():
        for i in range(n):
            png(root / folder / f"img{i}.png", value=(40 * i) % 256)
    return root


# ---------------------------------------------------------------------------------- class folders


def test_split_class_folders_brain_mri_mapping(tmp_path):
    make_tree(tmp_path, {f"{s}/{c}": 2 for s in ("Training", "Testing") for c in ("notumor", "glioma", "meningioma", "pituitary")})
    ds = load_dataset(tmp_path, split="train", negative="notumor", size=4, channels=3)
    assert len(ds) == 8 and sorted(ds.positive) == ["glioma", "meningioma", "pituitary"] and ds.negative == ["notumor"]
    assert sum(ds.labels) == 6 and all("Training" in p for p in ds.paths)
    item = ds[0]
    assert item["image"].shape == (3, 4, 4) and item["mask"].shape == (1, 4, 4) and item["has_mask"] is False
    images, labels, masks, has = ds.tensors()
    assert images.shape == (8, 3, 4, 4) and images.dtype == torch.float32
    assert labels.dtype == torch.long and labels.tolist() == ds.labels
    assert masks.shape == (8, 1, 4, 4) and has.dtype == torch.bool and not has.any()
    assert images.min() >= -1 and images.max() <= 1
    # only some classes mapped: the rest is ignored
    ds2 = load_dataset(tmp_path, split="test", positive="glioma,meningioma", negative=["NoTumor"])
    assert len(ds2) == 6 and sum(ds2.labels) == 4 and ds2.channels == 1 and ds2.size == 8
    assert len(load_dataset(tmp_path, negative="notumor")) == 16  # split=None reads all splits


def test_auto_mapping_and_dataset_json(tmp_path):
    make_tree(tmp_path / "a", {"normal": 1, "pneumonia": 2})
    ds = load_dataset(tmp_path / "a")
    assert ds.positive == ["pneumonia"] and ds.negative == ["normal"] and sum(ds.labels) == 2
    make_tree(tmp_path / "b", {"cats": 1, "dogs": 1})
    with pytest.raises(MedxganError, match="--positive/--negative"):
        load_dataset(tmp_path / "b")
    (tmp_path / "b" / "dataset.json").write_text(json.dumps({"positive": ["dogs"], "negative": "cats"}))
    ds = load_dataset(tmp_path / "b")
    assert ds.positive == ["dogs"] and ds.labels == [0, 1]


def test_flat_layout_hash_split(tmp_path):
    make_tree(tmp_path, {"negative": 12, "positive": 12})
    full = load_dataset(tmp_path)
    assert len(full) == 24 and full.positive == ["positive"]
    train = load_dataset(tmp_path, split="train")
    expected = [s.path for s in full.samples if hash_split(s.rel) == "train"]
    assert [s.path for s in train.samples] == expected and all(s.split == "train" for s in train.samples)
    assert hash_split("positive/img0.png") == hash_split("positive/img0.png")  # deterministic
    counts = {s: sum(hash_split(f"c/{i}.png") == s for i in range(2000)) for s in ("train", "val", "test")}
    assert abs(counts["train"] / 2000 - 0.70) < 0.04 and abs(counts["val"] / 2000 - 0.15) < 0.03


def test_masks_tree_binarised_and_resized(tmp_path):
    make_tree(tmp_path, {"train/negative": 1, "train/positive": 1})
    m = np.zeros((8, 8), np.uint8)
    m[:4, 4:] = 200  # > 0.5 after scaling
    m[7, 0] = 100  # < 0.5: dropped
    Image.fromarray(m).save(png(tmp_path / "masks/train/positive/img0.bmp", 0))
    ds = load_dataset(tmp_path, split="train", size=4)
    i = ds.labels.index(1)
    item = ds[i]
    assert item["has_mask"] is True and ds[1 - i]["has_mask"] is False
    expected = torch.zeros(1, 4, 4)
    expected[0, :2, 2:] = 1
    assert torch.equal(item["mask"], expected)


def test_mask_wrong_size(tmp_path):
    make_tree(tmp_path, {"negative": 2, "positive": 2})
    png(tmp_path / "masks/positive/img0.png", 255, size=(6, 8))
    with pytest.raises(MedxganError, match=r"img0\.png.*6x8.*8x8"):
        load_dataset(tmp_path)
    ds = load_dataset(tmp_path, skip_bad=True, negative="negative", positive="*")
    assert len(ds.skipped) == 1 and "mask" in ds.skipped[0][1]


# ---------------------------------------------------------------------------------- CSV


def test_csv_boxes_several_per_image(tmp_path):
    png(tmp_path / "imgs/p1.png", size=(20, 40))  # H=20, W=40
    png(tmp_path / "imgs/n1.png", size=(20, 40))
    png(tmp_path / "imgs/p2.png", size=(20, 40))
    png(tmp_path / "imgs/unlisted.png", size=(20, 40))
    (tmp_path / "boxes.csv").write_text(
        "path,label,x,y,w,h\n"
        "imgs/p1.png,Lung Opacity,0,0,20,10\n"
        "imgs/p1.png,Lung Opacity,30,10,10,10\n"
        "imgs/n1.png,Normal,,,,\n"
        "imgs/p2,Lung Opacity,,,,\n"  # extension looked up; positive without box -> has_mask False
    )
    ds = load_dataset(tmp_path, csv="boxes.csv", size=(10, 20), negative="normal")
    assert ds.source == "csv" and len(ds) == 3 and ds.labels == [1, 0, 1]
    images, labels, masks, has = ds.tensors()
    assert has.tolist() == [True, True, False]
    expected = torch.zeros(10, 20)
    expected[:5, :10] = 1  # box 1 scaled by 1/2
    expected[5:, 15:] = 1  # box 2
    assert torch.equal(masks[0, 0], expected)
    assert masks[1].sum() == 0 and masks[2].sum() == 0
    # split column + numeric labels, positional (header-less) CSV; no box columns -> masks/ tree
    (tmp_path / "s.csv").write_text("imgs/p1.png,1,train\nimgs/n1.png,0,train\nimgs/p2.png,1,test\n")
    png(tmp_path / "masks/imgs/p1.png", 255, size=(20, 40))
    ds = load_dataset(tmp_path, csv=tmp_path / "s.csv", split="train")
    assert len(ds) == 2 and [ds[i]["has_mask"] for i in range(2)] == [True, False] and ds[0]["mask"].all()


@pytest.mark.parametrize(
    "row, match",
    [
        ("../outside.png,1", "row 3.*outside"),
        ("/etc/passwd.png,1", "row 3.*outside"),
        ("imgs/../../x.png,1", "row 3.*outside"),
        ("imgs/a.png,1,zero,0,5,5", "row 3.*box"),
        ("imgs/a.png", "row 3"),
        ("imgs/missing.png,1", "row 3.*missing.png"),
    ],
)
def test_csv_bad_rows(tmp_path, row, match):
    png(tmp_path / "imgs/a.png")
    png(tmp_path / "imgs/b.png")
    (tmp_path / "bad.csv").write_text(f"path,label,x,y,w,h\nimgs/b.png,0,,,,\n{row}\n")
    with pytest.raises(MedxganError, match=match) as e:
        load_dataset(tmp_path, csv=tmp_path / "bad.csv")
    assert "bad.csv" in str(e.value)


def test_csv_missing_column(tmp_path):
    (tmp_path / "c.csv").write_text("path,x,y,w,h\na.png,1,2,3,4\n")
    with pytest.raises(MedxganError, match="c.csv.*label"):
        load_dataset(tmp_path, csv=tmp_path / "c.csv")


# ---------------------------------------------------------------------------------- bad inputs


def test_corrupt_images_raise_or_skip(tmp_path):
    make_tree(tmp_path, {"negative": 2, "positive": 2})
    good = (tmp_path / "positive/img0.png").read_bytes()
    (tmp_path / "positive/trunc.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "negative/text.PNG").write_text("not an image")
    with pytest.raises(MedxganError, match=r"text\.PNG|trunc\.png"):
        load_dataset(tmp_path)
    ds = load_dataset(tmp_path, skip_bad=True)
    assert len(ds) == 4 and len(ds.skipped) == 2
    assert {p.rsplit("/", 1)[-1].rsplit("\\", 1)[-1] for p, _ in ds.skipped} == {"trunc.png", "text.PNG"}
    assert ds.tensors()[0].shape == (4, 1, 8, 8)


def test_corruption_found_only_at_decode(tmp_path, monkeypatch):
    make_tree(tmp_path, {"negative": 2, "positive": 2})
    ds = load_dataset(tmp_path, size=4)
    bad = tmp_path / "negative/img1.png"
    bad.write_text("garbage now")  # corrupted after indexing
    with pytest.raises(MedxganError, match="img1.png"):
        ds.tensors()
    ds = load_dataset(tmp_path, skip_bad=True)
    assert len(ds) == 3 and len(ds.skipped) == 1


def test_mixed_sizes_need_size_and_channels_majority(tmp_path):
    png(tmp_path / "negative/a.png", size=(8, 8), rgb=True)
    png(tmp_path / "negative/b.png", size=(8, 8), rgb=True)
    png(tmp_path / "positive/c.png", size=(6, 6))
    ds = load_dataset(tmp_path)
    assert ds.channels == 3
    with pytest.raises(MedxganError, match="size"):
        ds.tensors()
    images = load_dataset(tmp_path, size=6).tensors()[0]
    assert images.shape == (3, 3, 6, 6)


def test_empty_folder_one_class_unknown_class(tmp_path):
    make_tree(tmp_path / "e", {"negative": 2})
    (tmp_path / "e/positive").mkdir()
    with pytest.raises(MedxganError, match=r"e[/\\]positive: class folder contains no images"):
        load_dataset(tmp_path / "e")
    make_tree(tmp_path / "o", {"train/negative": 2, "train/positive": 2, "val/negative": 2})
    with pytest.raises(MedxganError, match="only one class"):
        load_dataset(tmp_path / "o", split="val")
    (tmp_path / "o/val/positive").mkdir()  # empty here, but the class has images in train: fine
    assert len(load_dataset(tmp_path / "o")) == 6
    with pytest.raises(MedxganError, match=r"val[/\\]positive: class folder contains no images"):
        load_dataset(tmp_path / "o", split="val")
    with pytest.raises(MedxganError, match=r"split 'test' not found"):
        load_dataset(tmp_path / "o", split="test")
    make_tree(tmp_path / "u", {"notumor": 1, "glioma": 1})
    with pytest.raises(MedxganError, match=r"--positive: class 'gliomaa'.*available: glioma, notumor"):
        load_dataset(tmp_path / "u", positive="gliomaa", negative="notumor")
    with pytest.raises(MedxganError, match="no class folders"):
        load_dataset(tmp_path / "u" / "glioma")
    with pytest.raises(MedxganError, match="not found"):
        load_dataset(tmp_path / "nowhere")


def test_dicom_and_png_in_one_dataset(tmp_path, write_dicom):
    png(tmp_path / "negative/a.png", 0, rgb=True)
    (tmp_path / "positive").mkdir()
    write_dicom(tmp_path / "positive/b.DCM", np.full((8, 8), 100, np.uint16), WindowCenter=50, WindowWidth=100)
    ds = load_dataset(tmp_path, channels=None)
    assert ds.channels == 3  # tie 1:1 -> the first image's channel count
    images, labels, _, _ = ds.tensors()
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [0, 1]
    assert images[0].max() == -1.0 and images[1].min() == 1.0


def test_rsna_style_csv_with_patient_ids(tmp_path, write_dicom):
    write_dicom(tmp_path / "p1.dcm", np.zeros((16, 16), np.uint8))
    write_dicom(tmp_path / "n1.dcm", np.zeros((16, 16), np.uint8))
    (tmp_path / "labels.csv").write_text("patientId,x,y,width,height,Target\np1,4,4,8,4,1\np1,0,12,4,4,1\nn1,,,,,0\n")
    images, labels, masks, has = load_dataset(tmp_path, csv="labels.csv", size=8).tensors()
    assert labels.tolist() == [1, 0] and has.all()
    expected = torch.zeros(8, 8)
    expected[2:4, 2:6] = 1
    expected[6:8, 0:2] = 1
    assert torch.equal(masks[0, 0], expected)
