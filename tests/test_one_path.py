"""One explanation path: `medxgan explain` and `medxgan evaluate` give the same maps for the same GAN and images.

`MedXGAN.explain` composes the DifferenceExplainer and LIGExplainer that `evaluate` scores, so the maps that
`explain` writes (OUT/<name>/maps.npz) must equal, bit for bit, the maps `evaluate` saves
(OUT/maps/<image_id>/medxgan-diff.npz, medxgan-lig.npz) for the same images and inversion settings.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import known_images, write_png

from medxgan.cli import main
from medxgan.report import figures as fig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit (the TorchScript classifier)
def test_explain_and_evaluate_write_identical_maps(gan_run, tmp_path):
    x, _, _ = known_images(4, seed=21)
    data = tmp_path / "data"
    for i in range(4):  # at the GAN's own size: neither command resizes
        d = data / "test" / ("positive" if i % 2 == 0 else "negative")
        d.mkdir(parents=True, exist_ok=True)
        write_png(d / f"im{i}.png", np.asarray(fig.tensor_to_pil(x[i])))
    (data / "dataset.json").write_text(json.dumps({"positive": ["positive"], "negative": ["negative"]}))
    schedule = ["--steps", "6", "--restarts", "1", "--batch-size", "1", "--device", "cpu"]
    rc = main(["explain", str(data / "test"), "--gan", str(gan_run), "--out", str(tmp_path / "explained"), "--frames", "3",
               "--quiet", *schedule])
    assert rc == 0
    rc = main(["evaluate", str(data), "--gan", str(gan_run), "--out", str(tmp_path / "eval"), "--methods", "medxgan-diff",
               "medxgan-lig", "--subset", "all", "--noise-sigmas", "--no-max-sensitivity", "--no-plots", *schedule])
    assert rc == 0
    compared = 0
    for folder in sorted((tmp_path / "eval" / "maps").iterdir()):
        name = str(np.load(folder / "input.npz")["path"]).rsplit("/", 1)[-1].removesuffix(".png")
        explained = np.load(tmp_path / "explained" / name / "maps.npz")
        diff, lig = np.load(folder / "medxgan-diff.npz"), np.load(folder / "medxgan-lig.npz")
        np.testing.assert_array_equal(explained["difference"], diff["map"])
        np.testing.assert_array_equal(explained["signed_difference"], diff["signed_difference"][0])
        np.testing.assert_array_equal(explained["lig"], lig["map"])
        assert np.abs(explained["difference"]).max() > 0 and np.abs(explained["lig"]).max() > 0  # not trivially equal
        compared += 1
    assert compared == 4


def test_explain_with_non_finite_maps_is_one_line_error():
    """The maps come from the Explainers, which refuse NaN/inf maps: `explain` reports that as a MedxganError."""
    import torch
    from helpers import tiny_models

    from medxgan.classifiers import ClassifierAdapter
    from medxgan.pipeline import MedXGAN
    from medxgan.runtime.errors import MedxganError

    g, clf = tiny_models()

    class NaNGradient(torch.nn.Module):  # finite scores, NaN gradients: LIG's maps are NaN
        def forward(self, x):
            return clf.logit(x) + 0.0 * torch.sqrt(-(x.abs() + 1)).sum((1, 2, 3)).nan_to_num(0.0)

    nan_clf = ClassifierAdapter(NaNGradient(), output="logit1")
    x, _, _ = known_images(2, seed=3)
    with pytest.raises(MedxganError, match="images 0-1: .*non-finite"):
        MedXGAN(g, nan_clf, inversion={"steps": 2, "restarts": 1}).explain(x, frames=2)
