"""`medxgan explain scan.nii.gz` goes through the data layer's NIfTI reading (data/nifti.py): each slice with
enough foreground is explained, named after its slice reference, with the classifier the GAN run recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest

nib = pytest.importorskip("nibabel", reason="nibabel is not installed (pip install '.[nifti]')")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_explain_a_nifti_volume(gan_run, tmp_path):
    from medxgan.cli import main
    from medxgan.data import collect_image_files

    rng = np.random.default_rng(0)
    vol = np.zeros((24, 24, 6), np.float32)
    vol[4:20, 4:20, 1:5] = 100 + 20 * rng.random((16, 16, 4))  # a "head" in slices z = 1..4
    vol[8:12, 8:12, 2] = 300  # a bright spot in one slice
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    slices = collect_image_files([path])
    assert len(slices) >= 2 and all("#z=" in str(s) for s in slices)
    out = tmp_path / "expl"
    rc = main(["explain", str(path), "--gan", str(gan_run), "--out", str(out), "--steps", "1", "--restarts", "1", "--frames", "2",
               "--lig-steps", "2", "--device", "cpu", "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == len(slices)
    assert all(0.0 <= im["prob_input"] <= 1.0 for im in summary["images"])
    assert (out / "index.html").is_file()
