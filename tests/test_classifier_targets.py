"""Targets of multi-class / multi-label classifiers (hand-computed logits), the "auto" decoding rule and
its refusals, and checkpoints as users have them (wrappers, module. prefixes, full key mismatches,
torch.export programs, module:factory next to a package folder)."""

import math
import sys

import pytest
import torch
from torch import nn

from medxgan.classifiers import ClassifierAdapter, Target, load_classifier, wrap_classifier
from medxgan.runtime.errors import MedxganError

pytestmark = pytest.mark.usefixtures("one_thread")

# one image's 4-class logits, and what each target's logit must be (by hand: log-sum-exp of the listed entries)
L = [1.0, 2.0, 3.0, 0.5]


def _lse(*v):
    return math.log(sum(math.exp(a) for a in v))


class Const(nn.Module):
    """Returns the rows given, whatever the input (batch size = number of rows)."""

    def __init__(self, rows):
        super().__init__()
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.float32))

    def forward(self, x):
        return self.rows[: x.shape[0]]


def _logit(model, n=1, **kw):
    return wrap_classifier(model, **kw).logit(torch.zeros(n, 1, 4, 4))


@pytest.mark.parametrize("kw,expected", [
    (dict(target_class=2), 3.0 - _lse(1.0, 2.0, 0.5)),
    (dict(target_class=0), 1.0 - _lse(2.0, 3.0, 0.5)),
    (dict(positive_classes=[1, 2]), _lse(2.0, 3.0) - _lse(1.0, 0.5)),
    (dict(positive_classes=[2], negative_classes=[0]), 3.0 - 1.0),  # class 3 left out of both
    (dict(positive_classes=[1, 2], negative_classes=[3]), _lse(2.0, 3.0) - 0.5),
])
def test_softmax_targets_by_hand(kw, expected):
    assert _logit(Const([L]), output="logits", **kw).item() == pytest.approx(expected, abs=1e-5)
    # the same model with the softmax inside: log(sum p[pos]) - log(sum p[neg]) is the same number
    probs = torch.softmax(torch.tensor([L]), 1).tolist()
    assert _logit(Const(probs), output="probs", **kw).item() == pytest.approx(expected, abs=1e-4)
    assert _logit(Const(probs), **kw).item() == pytest.approx(expected, abs=1e-4)  # auto: rows sum to 1 -> probs


def test_one_vs_rest_is_the_binary_logit_for_two_classes():
    assert _logit(Const([[0.3, 1.7]]), output="logits2").item() == pytest.approx(1.4, abs=1e-6)
    assert _logit(Const([[0.3, 1.7]]), output="logits2", target_class=1).item() == pytest.approx(1.4, abs=1e-6)
    assert _logit(Const([[0.3, 1.7]]), output="logits2", positive_index=0).item() == pytest.approx(-1.4, abs=1e-6)


def test_positive_index_of_a_k_class_model_is_its_target_class():
    ad = ClassifierAdapter(Const([L]), output="logits", positive_index=2)
    assert ad.logit(torch.zeros(1, 1, 4, 4)).item() == pytest.approx(3.0 - _lse(1.0, 2.0, 0.5), abs=1e-5)
    assert ad.target_description() == "class 2 vs rest"


def test_multilabel_sigmoid_columns():
    logits = [[-1.0, 0.25, 2.0]]
    assert _logit(Const(logits), multilabel=2).item() == pytest.approx(2.0)  # auto: values outside [0, 1] -> logits
    p = torch.sigmoid(torch.tensor(logits)).tolist()
    assert _logit(Const(p), output="probs", multilabel=1).item() == pytest.approx(0.25, abs=1e-5)
    with pytest.raises(MedxganError, match="ambiguous.*probs or logits"):
        _logit(Const(p), multilabel=1)  # every value in [0, 1]: refused, not guessed


def test_k_class_output_without_a_target_is_refused_in_one_line():
    with pytest.raises(MedxganError, match="shape \\(1, 4\\).*4 columns, not a binary.*--target-class") as e:
        _logit(Const([L]))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kw,match", [
    (dict(target_class=4), "class 4 does not exist.*classes 0-3"),
    (dict(positive_classes=[0, 1, 2, 3]), "no negative class left"),
    (dict(positive_classes=[1], negative_classes=[1]), "also positive"),
    (dict(negative_classes=[1]), "needs positive_classes"),
    (dict(target_class=1, multilabel=2), "multi-label class or positive"),
])
def test_bad_targets_are_refused(kw, match):
    with pytest.raises(MedxganError, match=match):
        _logit(Const([L]), output="logits", **kw)


def test_auto_refuses_one_column_in_0_1_and_says_what_it_decided(capsys):
    with pytest.raises(MedxganError, match="ambiguous.*prob1 or logit1"):
        _logit(Const([[0.51], [0.73]]), n=2)  # the MONAI model with a sigmoid inside
    torch.testing.assert_close(_logit(Const([[0.51], [0.73]]), n=2, output="prob1"), torch.logit(torch.tensor([0.51, 0.73])))
    ad = wrap_classifier(Const([[-0.5], [1.5]]))
    ad.logit(torch.zeros(2, 1, 4, 4))
    assert ad.output == "logit1" and "values outside [0, 1]" in ad.output_decision
    assert "output auto -> logit1" in capsys.readouterr().out
    ad2 = wrap_classifier(Const([[0.2, 0.8], [0.6, 0.4]]))
    ad2.logit(torch.zeros(2, 1, 4, 4))
    assert ad2.output == "probs2" and ad2.describe()["output"] == "probs2"  # the run records the decision, not "auto"


def test_target_round_trips_through_describe():
    ad = wrap_classifier(Const([L]), output="logits", positive_classes=[1, 2], negative_classes=[0])
    d = ad.describe()
    assert d["target_description"] == "classes 1,2 vs 0"
    assert Target.from_dict(d["target"]) == Target(positive=(1, 2), negative=(0,))


# ---- checkpoints as users have them ---------------------------------------------------------------
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.fixture
def factory_dir(tmp_path, monkeypatch):
    """A package ``myclf/`` in the current folder with a factory ``binary`` (the issue's layout)."""
    pkg = tmp_path / "myclf"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import torch\nfrom torch import nn\n\nclass Tiny(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 2, 3)\n        self.fc = nn.Linear(2, 2)\n\n    def forward(self, x):\n"
        "        return self.fc(self.conv(x).mean((2, 3)))\n\ndef binary():\n    return Tiny()\n")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in [m for m in sys.modules if m == "myclf" or m.startswith("myclf.")]:
        del sys.modules[name]
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_factory_spec_next_to_its_package_folder_and_checkpoint_wrappers(factory_dir):
    torch.manual_seed(0)
    ref = Tiny().eval()
    x = torch.randn(3, 1, 8, 8)
    expected = ref.fc(ref.conv(x).mean((2, 3)))
    expected = expected[:, 1] - expected[:, 0]
    sd = ref.state_dict()
    for i, obj in enumerate([{"model": sd}, {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, {"epoch": 3, "model_state_dict": sd}]):
        torch.save(obj, factory_dir / f"w{i}.pt")
        ad = load_classifier("myclf:binary", weights=factory_dir / f"w{i}.pt", output="logits2")
        torch.testing.assert_close(ad.logit(x), expected)
        assert ad.source["kind"] == "factory" and ad.source["spec"] == "myclf:binary"


def test_key_mismatch_is_reported_in_full_on_one_line(factory_dir):
    sd = {f"block.{i}.weight": torch.zeros(1) for i in range(30)}  # 30 unexpected names, 4 missing
    torch.save(sd, factory_dir / "bad.pt")
    with pytest.raises(MedxganError) as e:
        load_classifier("myclf:binary", weights=factory_dir / "bad.pt")
    msg = str(e.value)
    assert "\n" not in msg and "missing 4: conv.weight, conv.bias, fc.weight, fc.bias" in msg
    assert "unexpected 30:" in msg and "block.29.weight" in msg and "block.0.weight" in msg


def test_a_path_is_a_path_only_if_it_exists_or_has_a_suffix(factory_dir):
    with pytest.raises(MedxganError, match="not found"):
        load_classifier("missing_model.pt")
    with pytest.raises(MedxganError, match="cannot import module 'nosuchpkg'"):
        load_classifier("nosuchpkg:make")


def test_torch_export_program(tmp_path):
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.randn(3, 1, 8, 8)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "clf.pt2"))
    ad = load_classifier(tmp_path / "clf.pt2", output="logits2")
    torch.testing.assert_close(ad.logit(x), wrap_classifier(model, output="logits2").logit(x), rtol=1e-5, atol=1e-5)
    assert ad.fingerprint == wrap_classifier(model).fingerprint  # the same weights under the same names
    xg = x.clone().requires_grad_(True)
    ad.logit(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(MedxganError, match="not a torch.export program"):
        load_classifier(tmp_path / "junk.pt2")


def test_classifier_range_minus_one_parses_and_flags_without_classifier_are_refused(tmp_path):
    from medxgan.cli import build_parser
    from medxgan.cli.common import check_classifier_flags

    parser = build_parser()
    args = parser.parse_args(["explain", "x.png", "--gan", "g", "--out", "o", "--classifier", "m.pt", "--classifier-range", "-1,1",
                              "--target-class", "2"])
    assert args.classifier_range == "-1,1" and args.target_class == 2
    args = parser.parse_args(["explain", "x.png", "--gan", "g", "--out", "o", "--classifier-range=0,1", "--multilabel", "1"])
    with pytest.raises(MedxganError, match="--classifier-range: only with --classifier"):
        check_classifier_flags(args)


def test_recorded_file_classifiers_come_back_with_their_settings_and_fingerprint(tmp_path):
    """A GAN run's record of a TorchScript / .pt2 classifier (copied as is into RUN/classifier/) re-applies the
    recorded output kind, target and preprocessing, and refuses a replaced file naming both fingerprints."""
    import shutil

    from medxgan.classifiers import Preprocessing, load_recorded_classifier

    torch.manual_seed(0)
    model = Tiny().eval()
    pp = Preprocessing(input_size=(8, 8))
    x = torch.randn(3, 1, 16, 16)
    (tmp_path / "classifier").mkdir()
    torch.jit.save(torch.jit.script(model), str(tmp_path / "classifier" / "m.pt"))
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "classifier" / "m.pt2"))
    original = wrap_classifier(model).fingerprint
    for name in ("m.pt", "m.pt2"):
        ad = load_classifier(tmp_path / "classifier" / name, output="logits2", preprocessing=pp, target=Target(positive=(0,)))
        assert ad.fingerprint == original
        record = {"local": f"classifier/{name}", "fingerprint": ad.fingerprint, "adapter": ad.describe()}
        back = load_recorded_classifier(tmp_path, record)
        torch.testing.assert_close(back.logit(x), ad.logit(x))
        assert back.target_description() == "class 0 vs rest" and back.preprocessing.input_size == (8, 8)
    torch.manual_seed(1)
    torch.jit.save(torch.jit.script(Tiny().eval()), str(tmp_path / "other.pt"))
    shutil.copy(tmp_path / "other.pt", tmp_path / "classifier" / "m.pt")  # the run's copy replaced by another model's file
    with pytest.raises(MedxganError, match=rf"has fingerprint \w+ but the GAN was trained against fingerprint {original}") as e:
        load_recorded_classifier(tmp_path, {"local": "classifier/m.pt", "fingerprint": original, "adapter": {"output": "logits2"}})
    assert "\n" not in str(e.value)
