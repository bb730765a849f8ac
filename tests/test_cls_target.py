"""The GAN's classifier-term labels (TrainOptions.cls_target): hard 0 / 1 (the paper) or soft labels at the
classifier's median logit on real scans of each class ("real-median", measured and not adopted)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from helpers import small_conv_classifier, square_lesion_data
from torch import nn

from medxgan.classifiers import ClassifierAdapter
from medxgan.classifiers.reference import class_logit_medians
from medxgan.gan import get_preset, train_gan
from medxgan.gan.presets import Preset, TrainOptions
from medxgan.gan.train import GANTrainer
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.runs import RunDir
from medxgan.runtime.state import load_weights

TINY = dict(g_width=4, d_width=4, nz1=8, nz2=4)


class MeanLogit(nn.Module):
    """A 'classifier' whose positive logit is the image mean: hand-computable logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1, keepdim=True)


def test_class_logit_medians_by_hand():
    clf = ClassifierAdapter(MeanLogit(), output="logit1")
    means = torch.tensor([-3.0, -1.0, -2.0, 0.5, 4.0, 1.0, 2.0])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    images = means.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    # torch's median of an even count is the lower of the two middle values: negatives -3, -2, -1, 0.5 -> -2
    assert class_logit_medians(clf, images, labels, batch_size=3) == (-2.0, 2.0)
    with pytest.raises(ValueError, match="no positive scan"):
        class_logit_medians(clf, images[:4], labels[:4])


def test_cls_target_is_validated_and_hard_is_not_written():
    with pytest.raises(MedxganError, match="cls_target must be one of"):
        TrainOptions(cls_target="soft")
    # runs stored before the option existed trained with hard labels and recorded no cls_target:
    # writing it only when set keeps their stored preset equal to the preset on resume
    assert "cls_target" not in TrainOptions().to_dict()
    soft = get_preset("default", channels=1, cls_target="real-median")
    assert soft.train.to_dict()["cls_target"] == "real-median"
    assert Preset.from_dict(soft.to_dict()).train.cls_target == "real-median"
    assert Preset.from_dict(get_preset("default", channels=1).to_dict()).train.cls_target == "hard"


def test_soft_labels_in_the_classifier_terms_by_hand():
    preset = get_preset("fast", channels=1, size=32, **TINY)
    trainer = GANTrainer(preset, small_conv_classifier(), "cpu", cls_labels=(0.2, 0.9))
    y = torch.tensor([0, 1, 1, 0])
    assert trainer._cls_label(y).tolist() == pytest.approx([0.2, 0.9, 0.9, 0.2])
    hard = GANTrainer(preset, small_conv_classifier(), "cpu")
    assert torch.equal(hard._cls_label(y), y.float())  # the default is exactly the paper's 0 / 1
    # BCE with a soft label p is log 2 at logit 0 and is smallest at logit = log(p / (1 - p)): the class is
    # pulled to that logit from either side, not pushed past it
    p = torch.tensor([0.2])
    assert F.binary_cross_entropy_with_logits(torch.zeros(1), p).item() == pytest.approx(math.log(2))
    l0 = torch.tensor([math.log(0.2 / 0.8)], requires_grad=True)
    F.binary_cross_entropy_with_logits(l0, p).backward()
    assert l0.grad.abs().item() < 1e-7


def _train(out, steps, **kw):
    preset = get_preset("anchored", channels=1, size=32, **{**TINY, "ema_decay": 0.99, "cls_target": "real-median"})
    return train_gan(square_lesion_data(), small_conv_classifier(), out, steps=steps, batch_size=8, preset=preset, oracle=False,
                     device="cpu", quiet=True, monitor_samples=8, **kw)


def test_real_median_labels_are_stored_and_resume_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _train(a, 4, log_every=2, ckpt_every=2)
    cfg = json.loads((a / "config.json").read_text())
    x, y = square_lesion_data()
    neg, pos = class_logit_medians(small_conv_classifier(), x, y)
    assert cfg["cls_labels"] == pytest.approx([1 / (1 + math.exp(-neg)), 1 / (1 + math.exp(-pos))])
    assert cfg["preset"]["train"]["cls_target"] == "real-median"
    _train(b, 3, log_every=2, ckpt_every=2)
    shutil.rmtree(RunDir(b).checkpoint_root / "step_000000003", ignore_errors=True)
    _train(b, 4, log_every=2, ckpt_every=2, resume=True)
    for name in ("generator", "discriminator"):
        wa, wb = load_weights(a / f"{name}.safetensors"), load_weights(b / f"{name}.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
