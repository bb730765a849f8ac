"""The adapter on every supported output kind, preprocessing, loading routes and bad classifiers."""

import math

import pytest
import torch
from torch import nn

from medxgan.classifiers import ClassifierAdapter, PaperCNN, Preprocessing, SmallResNet, load_classifier, wrap_classifier
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.ranking import average_precision, roc_auc


class Fixed(nn.Module):
    """Returns a fixed function of the input mean so we know the exact expected logit."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        s = x.mean(dim=(1, 2, 3))  # the 'true' positive logit
        if self.kind == "logits2":
            return torch.stack([-s / 2 + 3, s / 2 + 3], 1)  # difference = s, offset irrelevant
        if self.kind == "logit1":
            return s.unsqueeze(1)
        if self.kind == "logit_flat":
            return s
        if self.kind == "probs2":
            return torch.softmax(torch.stack([torch.zeros_like(s), s], 1), 1)
        if self.kind == "prob1":
            return torch.sigmoid(s).unsqueeze(1)
        if self.kind == "tuple":
            return (torch.stack([torch.zeros_like(s), s], 1), "aux")
        if self.kind == "dict":
            return {"logits": torch.stack([torch.zeros_like(s), s], 1), "features": x}
        if self.kind == "multiclass":
            return torch.zeros(x.shape[0], 5)
        raise AssertionError


@pytest.mark.parametrize("kind,output", [("logits2", "logits2"), ("logits2", "auto"), ("logit1", "logit1"), ("logit1", "auto"),
                                         ("logit_flat", "auto"), ("probs2", "probs2"), ("probs2", "auto"), ("prob1", "prob1"),
                                         ("tuple", "auto"), ("dict", "auto")])
def test_adapter_decodes_every_output_kind(kind, output):
    # offsets put the true logits on both sides of [0, 1]: "auto" refuses a single column that lies wholly in it
    x = torch.randn(4, 1, 8, 8) + torch.tensor([-2.0, -0.5, 1.5, 3.0]).view(4, 1, 1, 1)
    expected = x.mean(dim=(1, 2, 3))
    adapter = ClassifierAdapter(Fixed(kind), output=output)
    torch.testing.assert_close(adapter.logit(x), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(adapter.prob(x), torch.sigmoid(expected), atol=1e-5, rtol=1e-4)


def test_probs2_saturated_outputs_stay_finite():
    class Saturated(nn.Module):
        def forward(self, x):
            return torch.tensor([[1.0, 0.0], [0.0, 1.0]])

    logit = ClassifierAdapter(Saturated(), output="probs2").logit(torch.zeros(2, 1, 4, 4))
    assert torch.isfinite(logit).all() and logit[0] < -10 and logit[1] > 10


def test_gradients_flow_through_the_adapter():
    adapter = wrap_classifier(PaperCNN(1))
    x = torch.randn(2, 1, 64, 64, requires_grad=True)
    adapter.logit(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in adapter.parameters())


def test_adapter_stays_in_eval_mode():
    adapter = wrap_classifier(PaperCNN(1))
    adapter.train()
    assert not adapter.model.training


def test_non_binary_output_is_a_user_error():
    with pytest.raises(MedxganError, match="not a binary classifier"):
        ClassifierAdapter(Fixed("multiclass")).logit(torch.zeros(2, 1, 4, 4))


def test_preprocessing_resizes_converts_and_normalises():
    seen = {}

    class Spy(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.mean(dim=(1, 2, 3)).unsqueeze(1)

    pp = Preprocessing(input_size=(16, 16), input_channels=3, input_range="0,1", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    ClassifierAdapter(Spy(), output="logit1", preprocessing=pp).logit(torch.full((2, 1, 8, 8), 0.5))
    assert seen["x"].shape == (2, 3, 16, 16)
    # 0.5 in [-1,1] -> 0.75 in [0,1] -> (0.75-0.5)/0.25 = 1
    torch.testing.assert_close(seen["x"], torch.ones(2, 3, 16, 16))


def test_rgb_to_gray_uses_luminance():
    seen = {}

    class Spy(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.mean(dim=(1, 2, 3))

    x = torch.stack([torch.full((4, 4), 1.0), torch.zeros(4, 4), torch.zeros(4, 4)]).unsqueeze(0)
    ClassifierAdapter(Spy(), output="logit1", preprocessing=Preprocessing(input_channels=1)).logit(x)
    torch.testing.assert_close(seen["x"], torch.full((1, 1, 4, 4), 0.2989))


def test_load_torchscript_and_factory(tmp_path):
    model = PaperCNN(1).eval()
    ts = tmp_path / "clf.pt"
    torch.jit.save(torch.jit.script(model), str(ts))
    x = torch.randn(3, 1, 64, 64)
    expected = wrap_classifier(model).logit(x)
    torch.testing.assert_close(load_classifier(ts).logit(x), expected)

    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(weights))
    mod = tmp_path / "my_clf_module.py"
    mod.write_text("from medxgan.classifiers import PaperCNN\n\ndef make():\n    return PaperCNN(1)\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        adapter = load_classifier("my_clf_module:make", weights=weights)
    finally:
        sys.path.remove(str(tmp_path))
    torch.testing.assert_close(adapter.logit(x), expected)


def test_load_bad_specs(tmp_path):
    with pytest.raises(MedxganError, match="not found"):
        load_classifier(tmp_path / "nope")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(MedxganError, match="junk.pt"):
        load_classifier(junk)
    with pytest.raises(MedxganError, match="cannot import"):
        load_classifier("no_such_module_xyz:make")
    empty = tmp_path / "emptyrun"
    empty.mkdir()
    with pytest.raises(MedxganError, match="config.json"):
        load_classifier(empty)


def test_builtin_architectures_shapes():
    assert PaperCNN(3)(torch.zeros(2, 3, 64, 64)).shape == (2, 2)
    for size in (64, 128, 256):
        assert SmallResNet(1, size)(torch.zeros(2, 1, size, size)).shape == (2, 2)


def test_auc_and_average_precision_against_hand_values():
    # scores 0.8+ 0.4- 0.35+ 0.1-: thresholds give (R, P) = (1/2, 1), (1/2, 1/2), (1, 2/3) -> AP 1/2 + 1/3
    assert average_precision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.5 + 1 / 3)
    assert average_precision([0.3, 0.3], [1, 1]) == 1.0 and math.isnan(average_precision([1, 2], [0, 0]))
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([1, 1, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)
    assert math.isnan(roc_auc([1, 2], [1, 1]))


def test_gradcam_layer_is_the_activated_last_conv_output():
    from medxgan.classifiers import gradcam_layer

    assert gradcam_layer(PaperCNN(1)) is PaperCNN(1).features[-1][2] or isinstance(gradcam_layer(PaperCNN(1)), nn.BatchNorm2d)
    res = SmallResNet(1, 64)
    assert gradcam_layer(res) is res.layers[-1]
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 31 * 31, 2))
    assert gradcam_layer(seq) is seq[2]  # conv -> ReLU -> BN, stops before pooling
