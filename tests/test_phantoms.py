"""Procedural phantoms: exact ground truth, determinism, on-disk layout, shortcut markers, CLI errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medxgan.cli import main
from medxgan.data.phantoms import PHANTOM_KINDS, PhantomKind, render_brain, render_chest, synthesize
from medxgan.data.phantoms.common import mask_boxes, marker_mask, to_uint8
from medxgan.runtime.errors import MedxganError

RENDERERS = {"brain-mri": render_brain, "chest-xray": render_chest}


def _render(kind, seed, i, size=64, positive=True, shortcut=0.0, **kw):
    return RENDERERS[kind](np.random.default_rng([seed, i]), size, positive, shortcut, **kw)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im)


# ---------------------------------------------------------------------------------------------- in memory


@pytest.mark.parametrize("kind", list(RENDERERS))
@pytest.mark.parametrize("size", [64, 96])
def test_mask_is_exactly_what_the_lesion_changed(kind, size):
    for i in range(1, 24, 2):
        img, mask, marker, *rest = _render(kind, 3, i, size=size, shortcut=0.5)
        twin, twin_mask, twin_marker, *_ = _render(kind, 3, i, size=size, shortcut=0.5, lesion=False)
        assert img.dtype == np.float32 and img.shape == (size, size) and mask.dtype == bool
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert mask.any(), "positives must have a non-empty mask"
        assert not twin_mask.any()
        assert np.array_equal(marker, twin_marker)
        changed = to_uint8(img) != to_uint8(twin)
        assert not (changed & ~mask).any(), "the lesion changed pixels outside its mask"
        # and the mask is not much larger than what the lesion visibly changed
        assert changed[mask].mean() > 0.5
        assert not (mask & marker).any()
        if kind == "brain-mri":  # lesions have a radius of at least ~3 px at 64 px
            assert mask.sum() >= 20 * (size / 64) ** 2
        if kind == "chest-xray":
            boxes = rest[0]
            assert 1 <= len(boxes) <= 3
            x0, y0, w0, h0 = mask_boxes(mask)
            for x, y, w, h in boxes:
                assert x0 <= x and y0 <= y and x + w <= x0 + w0 and y + h <= y0 + h0
                assert mask[y : y + h, x : x + w].any()


@pytest.mark.parametrize("kind", list(RENDERERS))
def test_negatives_have_no_lesion_and_renders_are_deterministic(kind):
    for i in range(0, 12, 2):
        a = _render(kind, 5, i, positive=False)
        b = _render(kind, 5, i, positive=False)
        assert not a[1].any()
        assert np.array_equal(a[0], b[0])
        if kind == "chest-xray":
            assert a[3] == []
    assert not np.array_equal(_render(kind, 5, 0)[0], _render(kind, 6, 0)[0])
    assert not np.array_equal(_render(kind, 5, 0)[0], _render(kind, 5, 2)[0])


def test_marker_shape_is_small_and_in_the_corner():
    for size in (64, 128):
        m = marker_mask(size)
        ys, xs = np.nonzero(m)
        assert 6 <= m.sum() <= 0.01 * size * size
        assert ys.max() < size // 8 and xs.max() < size // 8


# ---------------------------------------------------------------------------------------------- on disk


@pytest.mark.parametrize("kind", list(RENDERERS))
def test_synth_layout(kind, tmp_path):
    out = tmp_path / "ds"
    summary = synthesize(kind, out, n=40, size=64, seed=1, shortcut=0.5, preview=True, show_progress=False)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["kind"] == kind and meta["positive"] == ["positive"] and meta["negative"] == ["negative"]
    assert (meta["n"], meta["size"], meta["seed"], meta["shortcut"]) == (40, 64, 1, 0.5)
    assert meta["splits"] == {"train": 28, "val": 6, "test": 6}
    assert meta["counts"] == summary["counts"]
    assert (out / "preview.png").is_file()
    images = sorted(p for p in out.glob("*/*/*.png") if p.parts[-3] in ("train", "val", "test"))
    assert len(images) == 40
    n_pos = 0
    for p in images:
        split, cls, name = p.parts[-3:]
        img = _png(p)
        assert img.shape == (64, 64) and img.dtype == np.uint8
        mask = _png(out / "masks" / split / cls / name)
        marker = _png(out / "markers" / split / cls / name)
        assert set(np.unique(mask)) <= {0, 255} and set(np.unique(marker)) <= {0, 255}
        assert (mask > 0).any() == (cls == "positive")
        assert not ((mask > 0) & (marker > 0)).any()
        n_pos += cls == "positive"
        assert meta["counts"][split][cls] >= 1
    assert n_pos == 20
    if kind == "chest-xray":
        with open(out / "boxes.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == ["path", "label", "split", "x", "y", "w", "h"]
        by_path: dict[str, list] = {}
        for r in rows:
            by_path.setdefault(r["path"], []).append(r)
        assert len(by_path) == 40
        for rel, rs in by_path.items():
            split, cls, _ = rel.split("/")
            assert all(r["label"] == cls and r["split"] == split for r in rs)
            mask = _png(out / "masks" / rel) > 0
            if cls == "negative":
                assert len(rs) == 1 and rs[0]["x"] == rs[0]["w"] == ""
            else:
                covered = np.zeros_like(mask)
                for r in rs:
                    x, y, w, h = (int(r[k]) for k in "xywh")
                    assert w > 0 and h > 0
                    covered[y : y + h, x : x + w] = True
                assert not (mask & ~covered).any()
    else:
        assert not (out / "boxes.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name != "ds"], "temporary directory left behind"


def test_synth_is_deterministic_per_seed(tmp_path):
    a = _tree(Path(synthesize("chest-xray", tmp_path / "a", n=12, seed=4, shortcut=0.5, show_progress=False)["out"]))
    b = _tree(Path(synthesize("chest-xray", tmp_path / "b", n=12, seed=4, shortcut=0.5, show_progress=False)["out"]))
    c = _tree(Path(synthesize("chest-xray", tmp_path / "c", n=12, seed=5, shortcut=0.5, show_progress=False)["out"]))
    assert a == b
    assert a.keys() == c.keys() and a != c
    # image i depends only on (seed, i), not on n
    d = _tree(Path(synthesize("chest-xray", tmp_path / "d", n=4, seed=4, shortcut=0.5, show_progress=False)["out"]))
    same = [k for k in d if k.endswith("chest_00001.png") and not k.startswith(("masks", "markers"))]
    assert same and all(d[k] == a[k] for k in same)


def test_shortcut_marker_rate(tmp_path):
    out = tmp_path / "sc"
    synthesize("brain-mri", out, n=120, seed=2, shortcut=0.7, show_progress=False)
    meta = json.loads((out / "dataset.json").read_text())
    pos = sum(c["positive"] for c in meta["markers"].values())
    neg = sum(c["negative"] for c in meta["markers"].values())
    assert 0.5 * 60 <= pos <= 0.9 * 60
    assert neg <= 6
    on_disk = sum((_png(p) > 0).any() for p in (out / "markers").rglob("*.png"))
    assert on_disk == pos + neg
    for p in (out / "markers").rglob("*.png"):
        rel = p.relative_to(out / "markers")
        img = _png(out / rel)
        marker = _png(p) > 0
        assert (img[marker] == 255).all()
        assert not (marker & (_png(out / "masks" / rel) > 0)).any()
    out0 = tmp_path / "none"
    synthesize("brain-mri", out0, n=20, seed=2, shortcut=0.0, show_progress=False)
    assert not any((_png(p) > 0).any() for p in (out0 / "markers").rglob("*.png"))


def test_existing_out_and_interrupted_runs(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(MedxganError, match="out"):
        synthesize("brain-mri", out, n=4, show_progress=False)
    assert (out / "keep.txt").exists()
    # --overwrite replaces only a data set medxgan made (its marker): the user's folder is refused, untouched (issue 33)
    with pytest.raises(MedxganError, match="--overwrite only acts on a folder medxgan made"):
        synthesize("brain-mri", out, n=4, overwrite=True, show_progress=False)
    assert (out / "keep.txt").read_text() == "x"
    (out / "keep.txt").unlink()
    synthesize("brain-mri", out, n=4, show_progress=False)
    (out / "extra.txt").write_text("x")  # a file the user added to a medxgan data set goes with it on --overwrite
    synthesize("brain-mri", out, n=4, overwrite=True, show_progress=False)
    assert not (out / "extra.txt").exists() and (out / "dataset.json").exists()

    calls = []

    def broken(rng, size, positive, shortcut):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("boom")
        return render_brain(rng, size, positive, shortcut)

    monkeypatch.setitem(PHANTOM_KINDS, "broken", PhantomKind(name="broken", help="", render=broken))
    with pytest.raises(RuntimeError):
        synthesize("broken", tmp_path / "half", n=8, show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(kind="ct-scan"), "kind"),
        (dict(n=1), "n"),
        (dict(size=16), "size"),
        (dict(shortcut=1.5), "shortcut"),
        (dict(shortcut=-0.1), "shortcut"),
        (dict(seed=-1), "seed"),
        (dict(abnormal_frac=0.3), "abnormal_frac"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, kwargs, name):
    kw = dict(kind="brain-mri", out=tmp_path / "x", n=4, show_progress=False)
    kw.update(kwargs)
    with pytest.raises(MedxganError, match=f"^{name}:"):
        synthesize(**kw)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("args, name", [(["--n", "1"], "n"), (["--size", "8"], "size"), (["--shortcut", "2"], "shortcut")])
def test_cli_bad_args_exit_2_with_one_line(tmp_path, capsys, args, name):
    rc = main(["synth", "brain-mri", "--out", str(tmp_path / "x"), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and f"{name}:" in err


def test_cli_unknown_kind_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "ct-scan", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "ct-scan" in capsys.readouterr().err


def test_cli_writes_and_summarises(tmp_path, capsys):
    rc = main(["synth", "chest-xray", "--out", str(tmp_path / "c"), "--n", "10", "--quiet", "--preview"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1
    assert "train" in out[0] and str(tmp_path / "c") in out[0]
    assert (tmp_path / "c" / "boxes.csv").is_file() and (tmp_path / "c" / "preview.png").is_file()
    # refuses a non-empty --out without --overwrite
    assert main(["synth", "chest-xray", "--out", str(tmp_path / "c"), "--n", "10", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_a_kind_can_add_its_own_cli_flags(tmp_path, monkeypatch):
    seen = {}

    def render(rng, size, positive, shortcut, abnormal_frac=0.5):
        seen["abnormal_frac"] = abnormal_frac
        return render_brain(rng, size, positive, shortcut)

    def add_arguments(p):
        p.add_argument("--abnormal-frac", type=float, default=0.5)

    kind = PhantomKind(name="toy", help="toy", render=render, add_arguments=add_arguments,
                       defaults={"abnormal_frac": 0.5})
    monkeypatch.setitem(PHANTOM_KINDS, "toy", kind)
    assert main(["synth", "toy", "--out", str(tmp_path / "t"), "--n", "2", "--quiet", "--abnormal-frac", "0.25"]) == 0
    assert seen["abnormal_frac"] == 0.25
    meta = json.loads((tmp_path / "t" / "dataset.json").read_text())
    assert meta["options"] == {"abnormal_frac": 0.25}
