"""Fundus/angiogram phantoms: determinism, layout, what abnormal subjects change."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medxgan.data.phantoms.fundus import render_subject, synthesize_fundus_angio
from medxgan.runtime.errors import MedxganError


def test_render_is_deterministic_and_per_subject():
    f1, a1, i1 = render_subject(5, 2, size=48)
    f2, a2, _ = render_subject(5, 2, size=48)
    assert np.array_equal(f1, f2) and np.array_equal(a1, a2)
    f3, _, _ = render_subject(5, 3, size=48)
    assert not np.array_equal(f1, f3)
    assert f1.shape == (48, 48, 3) and a1.shape == (48, 48) and f1.dtype == np.float32
    assert 0 <= f1.min() and f1.max() <= 1 and 0 <= a1.min() and a1.max() <= 1
    assert i1["vessel_segments"] > 50


def test_fundus_and_angiogram_look_the_part():
    f, a, _ = render_subject(0, 0, size=96)
    inside = f.sum(-1) > 0.05
    r, g, b = (f[..., c][inside].mean() for c in range(3))
    assert r > g > b  # orange-red background
    corner = (slice(0, 4), slice(0, 4))
    assert f[corner].max() == 0 and a[corner].max() == 0  # outside the field of view: black
    assert np.median(a[inside]) < 0.35 and a.max() > 0.7  # dark angiogram background, bright vessels/disc


def test_abnormal_changes_the_angiogram_much_more_than_the_photo():
    f0, a0, i0 = render_subject(1, 4, size=96, abnormal=False)
    f1, a1, i1 = render_subject(1, 4, size=96, abnormal=True)
    assert i1["microaneurysms"] > 0 and i1["leakage_patches"] > 0 and i0["microaneurysms"] == 0
    d_photo, d_fa = np.abs(f1 - f0).max(), np.abs(a1 - a0).max()
    assert d_fa > 0.2 and d_photo < 0.5 * d_fa


def test_dataset_layout(tmp_path):
    meta = synthesize_fundus_angio(tmp_path / "d", n=12, size=32, seed=1, abnormal_frac=0.5, test_frac=0.25)
    root = tmp_path / "d"
    files = {s: sorted(p.name for p in (root / s).glob("*.png")) for s in ("trainA", "trainB", "testA", "testB")}
    assert {k: len(v) for k, v in files.items()} == {"trainA": 5, "trainB": 4, "testA": 3, "testB": 3}
    assert files["testA"] == files["testB"]  # paired by name
    assert not set(files["trainA"]) & set(files["trainB"])  # disjoint subjects: unpaired
    assert not (set(files["trainA"]) | set(files["trainB"])) & set(files["testA"])
    with Image.open(root / "trainA" / files["trainA"][0]) as im:
        assert im.mode == "RGB" and im.size == (32, 32)
    with Image.open(root / "trainB" / files["trainB"][0]) as im:
        assert im.mode == "L" and im.size == (32, 32)
    on_disk = json.loads((root / "dataset.json").read_text())
    assert on_disk["kind"] == "fundus-angio" and on_disk["files"] == files and meta["counts"]["trainA"] == 5
    assert (root / "preview.png").is_file()
    # same seed -> same bytes; a subject does not depend on n
    synthesize_fundus_angio(tmp_path / "e", n=14, size=32, seed=1, abnormal_frac=0.5, test_frac=0.25, preview=False)
    name = files["testA"][0]
    assert (root / "testA" / name).read_bytes() == (tmp_path / "e" / "testA" / name).read_bytes()


def test_bad_arguments():
    with pytest.raises(MedxganError, match="^abnormal_frac 1.5"):  # the library's argument name
        synthesize_fundus_angio("/nonexistent/x", n=10, abnormal_frac=1.5)
    with pytest.raises(MedxganError, match="^n "):
        synthesize_fundus_angio("/nonexistent/x", n=2)


def test_synth_cli(tmp_path, monkeypatch):
    from medxgan.cli import main
    from medxgan.data.phantoms import PHANTOM_KINDS
    from medxgan.data.phantoms.common import PhantomKind
    from medxgan.data.phantoms.fundus import FUNDUS_ANGIO_REGISTRY

    monkeypatch.setitem(PHANTOM_KINDS, "fundus-angio", PhantomKind(**FUNDUS_ANGIO_REGISTRY))  # no-op once registered
    out = tmp_path / "fa"
    assert main(["synth", "fundus-angio", "--out", str(out), "--n", "6", "--size", "32", "--abnormal-frac", "1", "--quiet"]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["abnormal_frac"] == 1.0 and len(meta["abnormal"]) == 6 and meta["size"] == 32
    assert (out / "preview.png").is_file()
    assert main(["synth", "fundus-angio", "--out", str(out), "--n", "6", "--size", "32", "--quiet"]) == 2  # not empty
    assert main(["synth", "fundus-angio", "--out", str(tmp_path / "x"), "--abnormal-frac", "2", "--quiet"]) == 2
