"""Explainer interface, counterfactuals/interpolation, figures, the MedXGAN API and `medxgan explain`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medxgan.cli import main
from medxgan.explain import CounterfactualEngine, DifferenceExplainer, Explainer, difference_maps, reduce_channels
from medxgan.pipeline import OUTPUT_FILES, MedXGAN
from medxgan.report import figures as fig
from medxgan.runtime.errors import MedxganError
from helpers import SIZE, known_images, tiny_models, write_png

FAST = dict(steps=40, lr=0.1, restarts=1)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the Explainer base class ---------------------------------------------------------------------
class _Saliency(Explainer):
    name = "saliency"

    def attribute(self, images):
        x = images.clone().requires_grad_(True)
        self.score(x).sum().backward()
        return x.grad.abs().sum(1, keepdim=True), {"score": self.score(images).detach()}


def test_explainer_base_batches_checks_and_merges():
    _, clf = tiny_models()
    x, _, _ = known_images(5)
    one = _Saliency(clf, batch_size=5).explain(x)
    two = _Saliency(clf, batch_size=2).explain(x)
    assert one.maps.shape == (5, 1, SIZE, SIZE) and one.method == "saliency"
    assert torch.allclose(one.maps, two.maps, atol=1e-6)
    assert two.extras["score"].shape == (5,)
    assert _Saliency(clf).explain(x[0]).maps.shape == (1, 1, SIZE, SIZE)  # a single C x H x W image
    with pytest.raises(MedxganError):
        _Saliency(clf).explain(x * 3)  # out of range
    with pytest.raises(MedxganError):
        _Saliency(clf).explain(torch.zeros(2, 2, SIZE, SIZE))  # 2 channels

    class _Nan(Explainer):
        name = "nan"

        def attribute(self, images):
            return torch.full((images.shape[0], 1, *images.shape[-2:]), float("nan"))

    with pytest.raises(RuntimeError, match="non-finite"):
        _Nan(clf).explain(x)


# ---- counterfactuals ------------------------------------------------------------------------------
def test_interpolation_endpoints_and_difference():
    g, clf = tiny_models()
    x, _, _ = known_images(2, seed=11)
    engine = CounterfactualEngine(g, clf, inversion=FAST)
    e = DifferenceExplainer(engine, frames=6).explain(x)
    frames, probs = e.extras["frames"], e.extras["frame_probs"]
    assert frames.shape == (2, 6, 1, SIZE, SIZE) and probs.shape == (2, 6)
    assert torch.allclose(frames[:, 0], e.extras["x_neg"], atol=1e-6)
    assert torch.allclose(frames[:, -1], e.extras["x_pos"], atol=1e-6)
    assert torch.allclose(probs[:, 0], e.extras["prob_neg"], atol=1e-5)
    assert torch.allclose(probs[:, -1], e.extras["prob_pos"], atol=1e-5)
    assert torch.allclose(e.maps, (e.extras["x_pos"] - e.extras["x_neg"]).abs(), atol=1e-6)
    # accumulated change >= |end - start| pixelwise (triangle inequality)
    assert (e.extras["accumulated_change"] >= e.maps - 1e-6).all()
    assert engine.inversions_run == 2
    DifferenceExplainer(engine).explain(x)  # cached
    assert engine.inversions_run == 2


def test_channel_reduction_uses_luminance_for_rgb():
    a = torch.zeros(1, 3, 2, 2)
    b = torch.zeros(1, 3, 2, 2)
    a[0, 0] = 1.0  # red only
    absd, signed = difference_maps(b, a)
    assert torch.allclose(absd, torch.full((1, 1, 2, 2), 0.2989))
    assert torch.allclose(signed, torch.full((1, 1, 2, 2), -0.2989))
    assert torch.equal(reduce_channels(torch.ones(1, 1, 2, 2)), torch.ones(1, 1, 2, 2))


# ---- MedXGAN API ----------------------------------------------------------------------------------
def test_medxgan_explain_api_converts_size_and_channels():
    g, clf = tiny_models()
    mx = MedXGAN(g, clf, inversion=FAST)
    x, _, _ = known_images(2, seed=12)
    rgb_big = torch.nn.functional.interpolate(x, size=(24, 24), mode="bilinear").expand(-1, 3, -1, -1).clamp(-1, 1)
    res = mx.explain(rgb_big, frames=5)
    assert len(res) == 2
    r = res[0]
    assert r.input.shape == r.reconstruction.shape == r.negative.shape == (1, SIZE, SIZE)
    assert r.difference.shape == r.lig.shape == r.signed_difference.shape == (1, SIZE, SIZE)
    assert r.frames.shape == (5, 1, SIZE, SIZE) and len(r.frame_probs) == 5 and r.alphas[0] == 0.0 and r.alphas[-1] == 1.0
    assert 0 <= r.prob_input <= 1 and np.isfinite(r.psnr)
    assert r.completeness_error_rel <= 0.05 or abs(r.lig_delta) < 1e-3
    json.dumps(r.summary())


# ---- figures --------------------------------------------------------------------------------------
def test_figure_helpers(tmp_path):
    img = torch.rand(1, 20, 30) * 2 - 1
    pil = fig.tensor_to_pil(img)
    assert pil.mode == "L" and pil.size == (30, 20)
    assert torch.allclose(fig.pil_to_tensor(pil), img, atol=1 / 127.5)
    assert fig.tensor_to_pil(torch.zeros(3, 8, 8)).mode == "RGB"
    m = torch.zeros(1, 20, 30)
    m[0, 5:10, 5:10] = 1.0
    ov = fig.overlay_heatmap(img, m)
    assert ov.mode == "RGB" and ov.size == (30, 20)
    assert np.asarray(ov)[0, 0].tolist() == np.asarray(pil.convert("RGB"))[0, 0].tolist()  # zero map leaves the image
    signed = fig.overlay_heatmap(pil, torch.randn(10, 15))  # map of another size is resized
    assert signed.size == (30, 20)
    outl = fig.draw_mask_outline(pil, m)
    assert (np.asarray(outl)[5, 5] == [0, 255, 0]).all() and not (np.asarray(outl)[7, 7] == [0, 255, 0]).all()
    strip = fig.captioned_strip([pil, pil], ["a\np=0.10", "b"])
    grid = fig.image_grid([[pil, None], [pil, pil]], row_labels=["r1", "r2"], col_labels=["c1", "c2"], title="t")
    assert strip.width > 2 * 30 and grid.height > 2 * 96
    fig.save_gif(tmp_path / "a.gif", [pil, ov, signed])
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 4  # boomerang: 3 forward + 1 back
    assert fig.normalize_map(torch.zeros(4, 4)).max() == 0


# ---- CLI ------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit (the TorchScript classifier)
def test_explain_cli_writes_figures_and_json(gan_run, tmp_path, capsys):
    x, _, _ = known_images(2, seed=13)
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_png(inputs / "a.png", np.asarray(fig.tensor_to_pil(x[0])))
    rgb = np.asarray(fig.tensor_to_pil(torch.nn.functional.interpolate(x[1:2], size=(40, 40), mode="bilinear")[0].expand(3, -1, -1)))
    write_png(tmp_path / "big_rgb.png", rgb)  # another size and channel count: converted
    out = tmp_path / "out"
    rc = main(["explain", str(inputs), str(tmp_path / "big_rgb.png"), "--gan", str(gan_run), "--out", str(out),
               "--frames", "5", "--steps", "20", "--restarts", "1", "--device", "cpu"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 2 and [r["name"] for r in summary["images"]] == ["a", "big_rgb"]
    for name in ("a", "big_rgb"):
        d = out / name
        for key, fname in OUTPUT_FILES.items():
            assert (d / fname).is_file(), fname
            if fname.endswith((".png", ".gif")):
                with Image.open(d / fname) as im:
                    im.verify()
        rec = json.loads((d / "explanation.json").read_text())
        assert len(rec["frame_probs"]) == 5 and 0 <= rec["prob_negative"] <= 1
        assert {"psnr", "prob_input", "prob_reconstruction", "lig", "files"} <= set(rec)
        assert "completeness_error_rel" in rec["lig"]
        with Image.open(d / "input.png") as im:
            assert im.size == (SIZE, SIZE) and im.mode == "L"
        with Image.open(d / "interpolation.gif") as im:
            assert im.n_frames >= 5
    assert "explanation(s) written" in capsys.readouterr().out
    # the gallery page: one row per scan, each with its latent slider over the stored frames, linking to its own page
    page = (out / "index.html").read_text()
    assert page.count("<tr><td class='name'>") == 2 and page.count("class='slider'") == 2
    assert "a/index.html" in page and "big_rgb/slider/frame_f04.png" in page and "<th class='sort'" in page
    assert "G(z1*, α z2*)" in (out / "a" / "index.html").read_text()
    assert len(list((out / "a" / "slider").glob("frame_f*.png"))) == 5 and len(list((out / "a" / "slider").glob("frame_c*.png"))) == 5
    # another classifier given explicitly, the authors' LIG form
    rc = main(["explain", str(inputs / "a.png"), "--gan", str(gan_run), "--out", str(tmp_path / "out2"), "--steps", "5",
               "--classifier", str(gan_run.parent / "clf.pt"), "--classifier-output", "logit1", "--lig-form", "authors", "--device", "cpu"])
    assert rc == 0
    rec = json.loads((tmp_path / "out2" / "a" / "explanation.json").read_text())
    assert rec["lig"]["form"] == "authors" and rec["lig"]["steps"] == 100


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_explain_cli_corrupt_input_is_a_one_line_error(gan_run, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    rc = main(["explain", str(bad), "--gan", str(gan_run), "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("medxgan: error:") and "broken.png" in err and "\n" not in err
    assert not (tmp_path / "o" / "summary.json").exists()
    rc = main(["explain", str(tmp_path / "missing.png"), "--gan", str(gan_run), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_explain_files_with_loader_workers_matches(gan_run, tmp_path):
    """Decoding in a DataLoader worker gives the same explanations as decoding inline."""
    from medxgan.pipeline import MedXGAN

    x, _, _ = known_images(3, seed=5)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        write_png(inputs / f"im{i}.png", np.asarray(fig.tensor_to_pil(x[i])))
    mx = MedXGAN.load(gan_run, device="cpu", steps=5, restarts=1)
    a = mx.explain_files(inputs, tmp_path / "a", batch_size=2, frames=3, show_progress=False)
    b = mx.explain_files(inputs, tmp_path / "b", batch_size=2, frames=3, show_progress=False, workers=1)
    assert [r["psnr"] for r in a["images"]] == [r["psnr"] for r in b["images"]]
    assert len(mx.engine._cache) == 0  # streamed: nothing kept after a batch is written
