"""A tiny real-anatomy pipeline end to end: Colin27 (one real brain MRI, Debian's mricron-data) -> lesions inserted
with masks and twins -> a tiny classifier -> a tiny GAN (a few steps) -> evaluate a few images, twins included.

Skipped with a reason when Colin27 is not installed (``apt-get install mricron-data``); CI installs it and sets
MEDXGAN_REQUIRE_COLIN27=1, so there it must run. The volume is subsampled (2 x 3 x 3 mm voxels, non-square in the
slice plane) to keep the test fast and to exercise the header's spacing.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from medxgan.data.real_anatomy import COLIN27
from medxgan.runtime.errors import MedxganError

if not COLIN27.is_file():
    if os.environ.get("MEDXGAN_REQUIRE_COLIN27"):
        raise RuntimeError(f"MEDXGAN_REQUIRE_COLIN27 is set but {COLIN27} is missing (apt-get install mricron-data)")
    pytest.skip(f"Colin27 not installed ({COLIN27}): apt-get install mricron-data", allow_module_level=True)
nib = pytest.importorskip("nibabel")


def small_colin(path):
    img = nib.load(str(COLIN27))
    data = np.asanyarray(img.dataobj)[::2, ::3, ::3]
    aff = img.affine.copy()
    aff[:3, :3] = aff[:3, :3] @ np.diag([2.0, 3.0, 3.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), aff), str(path))
    return path


def test_tiny_real_anatomy_pipeline(tmp_path):
    from medxgan.classifiers.training import train_classifier
    from medxgan.data.lesion_dataset import LesionDatasetConfig, synthesize_lesions
    from medxgan.evaluate.runner import evaluate
    from medxgan.gan.train import train_gan

    vol = small_colin(tmp_path / "colin-small.nii.gz")
    data = tmp_path / "data"
    s = synthesize_lesions([vol], data, LesionDatasetConfig(n=96, size=32, seed=0, slab=6, gap=1), show_progress=False)
    assert s["split_by"] == "slab" and all(c["positive"] > 0 for c in s["counts"].values())
    train_classifier(data, tmp_path / "clf", arch="resnet-small", epochs=1, size=32, device="cpu", quiet=True)
    train_gan(data, str(tmp_path / "clf"), tmp_path / "gan", steps=3, batch_size=8, log_every=3, ckpt_every=3, size=32,
              oracle=False, device="cpu", monitor_samples=8, preset_overrides={"size": 32, "g_width": 4, "d_width": 4, "nz1": 8, "nz2": 4},
              quiet=True)
    res = evaluate(data, tmp_path / "eval", gan=str(tmp_path / "gan"), methods=["medxgan-diff", "gradcam"], n=3, split="test",
                   subset="all", noise_sigmas=(), max_sensitivity=False, device="cpu", n_resamples=50, inversion={"steps": 2, "restarts": 1},
                   show_progress=False)
    assert res["slices"]["evaluated"] == 3
    assert "twin" in res["methods"]  # the ground-truth row: the twins were found and scored
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    psnr = saved["methods"]["medxgan-diff"]["metrics"]["twin_fidelity.residual.psnr"]
    assert psnr["n"] >= 1 and np.isfinite(psnr["mean"])


def test_real_brain_demo_says_what_to_install(tmp_path, monkeypatch):
    import medxgan.data.real_anatomy as ra
    from medxgan.demo import REAL_BRAIN, DemoConfig, run_demo

    monkeypatch.setattr(ra, "COLIN27", tmp_path / "missing" / "ch2bet.nii.gz")
    with pytest.raises(MedxganError, match="apt-get install mricron-data"):
        run_demo(tmp_path / "demo", config=DemoConfig(kind=REAL_BRAIN), device="cpu", show_progress=False)
    assert not (tmp_path / "demo").exists()  # refused before anything was written
