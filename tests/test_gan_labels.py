"""TrainOptions.gan_labels: the GAN learns from the data's labels (default) or from the classifier's own calls."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import square_lesion_data

import medxgan.gan.train as gan_train
from medxgan.classifiers import ClassifierAdapter
from medxgan.gan import get_preset, train_gan
from medxgan.gan.train import classifier_labels
from medxgan.runtime.errors import MedxganError

TINY = dict(g_width=4, d_width=4, nz1=8, nz2=4, size=32)


class MeanReader(torch.nn.Module):
    """Calls a scan positive when its mean pixel is above ``level``: the answer is known by hand."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return (x.mean(dim=(1, 2, 3)) > self.level).float() * 0.9 + 0.05


def test_classifier_labels_are_the_classifiers_calls():
    x = torch.stack([torch.full((1, 4, 4), v) for v in (-0.5, 0.1, 0.3, -0.2, 0.8)])
    assert classifier_labels(MeanReader(0.0), x, torch.device("cpu"), batch_size=2).tolist() == [0, 1, 1, 0, 1]
    with pytest.raises(MedxganError, match="calls every one of the 5 training scans negative") as exc:
        classifier_labels(MeanReader(5.0), x, torch.device("cpu"))
    assert "gan_labels" in exc.value.arg


def test_a_run_learns_from_the_classifiers_calls_and_records_it(tmp_path, monkeypatch):
    images, labels = square_lesion_data(32, 32, 1, 0)
    # a classifier of the mean pixel whose level sits at the 40th percentile: every positive and a few negatives
    # are called positive, so its calls differ from the data's labels
    means = images.mean(dim=(1, 2, 3))
    level = float(means.quantile(0.4))
    m = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))
    with torch.no_grad():
        m[2].weight.copy_(torch.tensor([[-100.0], [100.0]]))
        m[2].bias.copy_(torch.tensor([100.0 * level, -100.0 * level]))
    clf = ClassifierAdapter(m, output="logits2")
    calls = (means > level).long()
    assert 0 < int((calls != labels).sum()) < 16  # the calls disagree with the labels on some scans
    seen = []
    real_steps = gan_train.BatchSteps

    def spy(trainer, imgs, lbls, *a, **kw):
        seen.append(lbls.clone())
        return real_steps(trainer, imgs, lbls, *a, **kw)

    monkeypatch.setattr(gan_train, "BatchSteps", spy)
    kw = dict(batch_size=8, oracle=False, device="cpu", quiet=True, monitor_samples=8, steps=2)
    train_gan((images, labels), clf, tmp_path / "c", preset="default", preset_overrides={**TINY, "gan_labels": "classifier"}, **kw)
    train_gan((images, labels), clf, tmp_path / "d", preset="default", preset_overrides=TINY, **kw)
    assert torch.equal(seen[0], calls) and torch.equal(seen[1], labels.long())
    c = json.loads((tmp_path / "c" / "config.json").read_text())
    d = json.loads((tmp_path / "d" / "config.json").read_text())
    agreement = float((calls == labels.long()).float().mean())
    assert c["gan_labels"] == {"source": "classifier", "positives": int(calls.sum()), "agreement_with_data": round(agreement, 4)}
    assert c["preset"]["train"]["gan_labels"] == "classifier"
    assert d["gan_labels"]["source"] == "data" and "gan_labels" not in d["preset"]["train"]  # older runs' preset dict unchanged
    with pytest.raises(MedxganError, match="gan_labels must be one of data, classifier"):
        get_preset("default", channels=1, **TINY, gan_labels="oracle")


def test_a_classifier_calling_one_class_is_refused_before_any_work(tmp_path):
    images, labels = square_lesion_data(16, 32, 1, 0)
    m = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))
    with torch.no_grad():  # calls every scan negative
        m[2].weight.zero_()
        m[2].bias.copy_(torch.tensor([5.0, -5.0]))
    with pytest.warns(UserWarning), pytest.raises(MedxganError, match="calls every one of the 16 training scans negative"):
        train_gan((images, labels), ClassifierAdapter(m, output="logits2"), tmp_path / "g", preset="default",
                  preset_overrides={**TINY, "gan_labels": "classifier"}, batch_size=8, oracle=False, device="cpu", quiet=True, steps=2)
    assert not (tmp_path / "g").exists() or not any((tmp_path / "g").iterdir())  # nothing written
