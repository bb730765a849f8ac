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
    monkeypatch.undo()
    # the cross stage's second brain is checked up front too (it used to fail after the first hour of work)
    monkeypatch.setattr(ra, "icbm152", lambda: None)
    with pytest.raises(MedxganError, match="pip install nilearn"):
        run_demo(tmp_path / "demo", config=DemoConfig(kind=REAL_BRAIN), device="cpu", show_progress=False)
    assert not (tmp_path / "demo").exists()
    monkeypatch.undo()
    monkeypatch.setenv("MEDXGAN_ICBM152", str(tmp_path / "no-such.nii.gz"))
    with pytest.raises(MedxganError, match="MEDXGAN_ICBM152 .* is not a file"):
        ra.require_icbm152()


def test_real_brain_demo_learned_infill_stages(tmp_path, monkeypatch):
    """The real-brain demo at a tiny scale: after its evaluations, the learned in-fill is trained and the medXGAN methods
    are evaluated with it on both brains; the reports and the summary show those rows, and a rerun reuses every stage.
    The main evaluations run Grad-CAM only (the medXGAN methods with their sanity check would triple the test's time;
    the rows' labels next to the default in-fill's are tested on hand-made results below)."""
    from medxgan.demo import REAL_BRAIN, DemoConfig, run_demo
    from medxgan.demo_infill import learned_summary_lines

    cfg = DemoConfig(mode="custom", kind=REAL_BRAIN, n_images=120, classifier_epochs=1, gan_steps=3, gan_batch_size=8, gan_log_every=3,
                     gan_ckpt_every=3, gan_max_minutes=None, gan_monitor_samples=8,
                     gan_overrides=(("g_width", 4), ("d_width", 4), ("nz1", 8), ("nz2", 4)), oracle_epochs=1,
                     methods=("gradcam",), eval_n=2, eval_batch_size=2, inversion_steps=2,
                     inversion_restarts=1, noise_sigmas=(), max_sensitivity=False, max_sensitivity_n=0, n_resamples=20,
                     report_rows=2, frames=2, inpainter_steps=2)
    # the second brain: a flipped, subsampled Colin27 stands in for ICBM152 (nilearn, which ships ICBM152, is not a
    # test dependency; what is tested here is the stages' plumbing)
    other = small_colin(tmp_path / "colin-small.nii.gz")
    flipped = nib.load(str(other))
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.asanyarray(flipped.dataobj)[::-1]), flipped.affine), str(tmp_path / "other.nii.gz"))
    monkeypatch.setenv("MEDXGAN_ICBM152", str(tmp_path / "other.nii.gz"))
    out = tmp_path / "demo"
    ran: list[str] = []

    def hook(stage: str) -> None:
        ran.append(stage)
        if stage == "gan":  # a one-epoch classifier calls every scan negative; shift its positive logit so that the demo's
            # held-out predicted positives exist (what is tested here is the stages' plumbing, not the classifier)
            from safetensors.torch import load_file, save_file

            weights = load_file(str(out / "classifier" / "model.safetensors"))
            weights["head.bias"][1] += 5.0
            save_file(weights, str(out / "classifier" / "model.safetensors"))

    r1 = run_demo(out, config=cfg, device="cpu", show_progress=False, _stage_hook=hook)
    assert ran == ["data", "classifier", "gan", "eval", "cross", "inpainter", "learned", "cross-learned"]  # no frames: no medXGAN maps in eval/
    inp = json.loads((out / "inpainter" / "config.json").read_text())
    assert inp["status"] == "finished" and inp["steps_done"] == 2 and inp["variant"] == "context+gan"
    for d in ("eval-learned-gan", "eval-icbm152-learned-gan"):
        res = json.loads((out / d / "results.json").read_text())
        assert res["config"]["inversion"]["minimal_mask_infill"] == "learned-gan"
        assert res["config"]["inversion"]["minimal_mask_inpainter"] == str(out / "inpainter")
        assert {"medxgan-diff", "medxgan-lig"} <= set(res["methods"]) and "gradcam" not in res["methods"]  # baselines: the main eval's
    demo = json.loads((out / "demo.json").read_text())
    assert {"inpainter", "learned", "cross-learned"} <= set(demo["stages"]) and demo["paths"]["learned"] == str(out / "eval-learned-gan")
    html = (out / "report" / "index.html").read_text()
    assert "medxgan-diff@learned-gan" in html and "in-fill learned-gan: learned from the scan&#x27;s context + the GAN&#x27;s anatomy" in html
    assert "medxgan-diff@learned-gan" in (out / "eval-icbm152" / "report" / "index.html").read_text()  # the cross-brain page too
    assert learned_summary_lines(out / "eval-learned-gan")[0].startswith("in-fill learned-gan (learned from the scan's context")
    ran.clear()
    r2 = run_demo(out, config=cfg, device="cpu", show_progress=False, _stage_hook=ran.append)
    assert ran == [] and {"inpainter", "learned", "cross-learned"} <= set(r2["reused"]) and r1["settings"] == r2["settings"]


def test_report_shows_learned_infill_rows_next_to_the_default():
    """report.metric_tables.with_infill_rows on hand-made results: the learned-gan rows follow their default rows, each
    labelled with its in-fill, and the verdict judges both (values from the tables, never recomputed)."""
    from medxgan.report.metric_tables import metric_tables_html, row_label, with_infill_rows
    from medxgan.report.verdict import verdicts

    def stat(mean):
        return {"mean": mean, "lo": mean - 0.05, "hi": mean + 0.05, "n": 30}

    iou = "localisation.iou_area_matched"
    main = {"config": {"inversion": {"counterfactual": "residual"}},
            "methods": {"gradcam": {"metrics": {iou: stat(0.30)}}, "medxgan-diff": {"metrics": {iou: stat(0.303)}}}}
    learned = {"config": {"inversion": {"counterfactual": "residual", "minimal_mask_infill": "learned-gan"}},
               "methods": {"medxgan-diff": {"metrics": {iou: stat(0.549), "counterfactual_residual.valid_oracle": stat(0.833)}},
                           "twin": {"metrics": {iou: stat(0.98)}}}}
    assert with_infill_rows(main, None) is main and with_infill_rows(main, main) is main  # nothing else to show
    rows = with_infill_rows(main, learned)
    assert list(rows["methods"]) == ["gradcam", "medxgan-diff", "medxgan-diff@learned-gan"]  # the twin row stays the main one's
    assert row_label(rows, "medxgan-diff") == "medXGAN difference — in-fill: the GAN's anatomy (gan, the default)"
    assert row_label(rows, "medxgan-diff@learned-gan") == ("medXGAN difference — in-fill learned-gan: learned from the scan's "
                                                           "context + the GAN's anatomy")
    html = metric_tables_html(rows)
    assert html.index("medxgan-diff</span>") < html.index("medxgan-diff@learned-gan</span>")  # next to each other, default first
    by = {(v["method"], v["key"]): v for v in verdicts(rows)}
    assert by[("medxgan-diff", iou)]["state"] == "ahead" and by[("medxgan-diff@learned-gan", iou)]["state"] == "lead"
    oracle = [v for v in verdicts(rows) if v["method"] == "medxgan-diff@learned-gan" and "oracle" in v["claim"]]
    assert len(oracle) == 1 and oracle[0]["state"] == "ahead" and "learned-gan" in oracle[0]["claim"]
