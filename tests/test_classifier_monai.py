"""The issue-28 scenario with a tiny MONAI ResNet: a user's classifier (3 channels, [0, 1] with ImageNet
mean/std, its own input size) brought in by every documented path gives the model's own probabilities
(computed here by hand: resize, repeat the channel, scale, normalise, forward), a run remembers it
completely (weights, output kind, target, preprocessing; fingerprint checked), and a 4-class model is
explained for one class against the rest from the CLI and from Python."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import write_dataset

monai = pytest.importorskip("monai", reason="MONAI is not installed (pip install '.[monai]'); the MONAI scenario needs it")

from medxgan.classifiers import Preprocessing, Target, load_classifier, wrap_classifier  # noqa: E402
from medxgan.runtime.errors import MedxganError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD, PX = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 32
FLAGS = ["--classifier-size", str(PX), "--classifier-channels", "3", "--classifier-range", "0,1",
         "--classifier-mean", *map(str, MEAN), "--classifier-std", *map(str, STD)]
PRE = Preprocessing(input_size=(PX, PX), input_channels=3, input_range="0,1", mean=MEAN, std=STD)
FACTORY = """
import torch
from torch import nn
from monai.networks.nets import ResNet


def _resnet(classes):
    torch.manual_seed(0)
    return ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 8, 8, 8], spatial_dims=2, n_input_channels=3,
                  num_classes=classes)


def binary():  # one output with the sigmoid inside, as in the issue
    return nn.Sequential(_resnet(1), nn.Sigmoid())


def four():  # 4 softmax logits; class 2 = tumour
    return _resnet(4)
"""


def _own_input(x):
    """The MONAI model's own preprocessing, written out: 64 px gray [-1, 1] -> 32 px RGB ImageNet-normalised."""
    x = F.interpolate(x, size=(PX, PX), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    return ((x + 1) / 2 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """The user's folder: the package myclf/ (factories), trained-looking weights, a 64 px data set."""
    (tmp_path / "myclf").mkdir()
    (tmp_path / "myclf" / "__init__.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, str(tmp_path))
    import myclf

    torch.manual_seed(1)
    for name, make in (("binary", myclf.binary), ("four", myclf.four)):
        m = make()
        with torch.no_grad():  # weights that differ from the factory's seeded initialisation (a "trained" model)
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
        sd = {f"module.{k}": v for k, v in m.state_dict().items()}  # a DataParallel checkpoint in a wrapper
        torch.save({"model": sd, "epoch": 7}, tmp_path / f"{name}.pt")
    write_dataset(tmp_path / "data", n_per_class=8)
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("myclf", None)


def _trained(name):
    import myclf

    m = getattr(myclf, name)()
    sd = torch.load(f"{name}.pt", weights_only=True)["model"]
    m.load_state_dict({k[len("module."):]: v for k, v in sd.items()})
    return m.eval()


def _probe():
    torch.manual_seed(3)
    return torch.rand(4, 1, 64, 64) * 2 - 1


def test_every_path_gives_the_models_own_probability(user_folder):
    from medxgan.cli import build_parser
    from medxgan.cli.common import classifier_from_args

    model, x = _trained("binary"), _probe()
    with torch.no_grad():
        own = model(_own_input(x))[:, 0]
    # 1. Python: wrap_classifier, output declared
    torch.testing.assert_close(wrap_classifier(model, output="prob1", preprocessing=PRE).prob(x), own, atol=1e-5, rtol=1e-4)
    # auto on a sigmoid-inside model: refused (it used to read the probabilities as logits: p 0.50-0.73 for every scan)
    with pytest.raises(MedxganError, match="ambiguous.*prob1 or logit1"):
        wrap_classifier(model, preprocessing=PRE).prob(x)
    # 2. TorchScript and torch.export files with the flags
    torch.jit.save(torch.jit.trace(model, _own_input(x)), "clf.pt")
    torch.export.save(torch.export.export(model, (_own_input(x),), dynamic_shapes=({0: torch.export.Dim("batch")},)), "clf.pt2")
    parser = build_parser()
    for spec in ("clf.pt", "clf.pt2"):
        args = parser.parse_args(["explain", "x.png", "--gan", "g", "--out", "o", "--classifier", spec, "--classifier-output", "prob1", *FLAGS])
        torch.testing.assert_close(classifier_from_args(args).prob(x), own, atol=1e-5, rtol=1e-4)
    # 3. package.module:factory + a wrapped, module.-prefixed checkpoint, from the folder holding myclf/
    args = parser.parse_args(["explain", "x.png", "--gan", "g", "--out", "o", "--classifier", "myclf:binary", "--classifier-weights",
                              "binary.pt", "--classifier-output", "prob1", *FLAGS])
    torch.testing.assert_close(classifier_from_args(args).prob(x), own, atol=1e-5, rtol=1e-4)


def _train_cli(out, *classifier_args):
    from medxgan.cli import main

    return main(["train", "data", *classifier_args, "--out", str(out), "--steps", "1", "--batch-size", "4", "--log-every", "1",
                 "--ckpt-every", "1", "--no-oracle", "--device", "cpu", "--quiet", "--monitor-samples", "8", "--no-choose-infill",
                 "--set", "g_width=4", "--set", "d_width=4", "--set", "nz1=8", "--set", "nz2=4"])


def _explain_cli(gan, out):
    from medxgan.cli import main

    rc = main(["explain", "data/test/positive/000.png", "data/test/negative/000.png", "--gan", str(gan), "--out", str(out),
               "--steps", "1", "--restarts", "1", "--frames", "2", "--lig-steps", "2", "--minimal-mask-steps", "0", "--device", "cpu", "--quiet"])
    return rc, json.loads((Path(out) / "summary.json").read_text()) if rc == 0 else None


def _data_images():
    from medxgan.data import load_image_tensor

    return torch.cat([load_image_tensor(p, size=64, channels=1).reshape(1, 1, 64, 64)
                      for p in ("data/test/positive/000.png", "data/test/negative/000.png")])


def test_factory_run_remembers_its_classifier_and_refuses_other_weights(user_folder, capsys):
    # the ambiguous output is refused before anything is written
    assert _train_cli("gan0", "--classifier", "myclf:binary", "--classifier-weights", "binary.pt", *FLAGS) == 2
    assert "ambiguous" in capsys.readouterr().err and not (user_folder / "gan0" / "config.json").exists()
    assert _train_cli("gan", "--classifier", "myclf:binary", "--classifier-weights", "binary.pt", "--classifier-output", "prob1", *FLAGS) == 0
    cfg = json.loads((user_folder / "gan" / "config.json").read_text())
    assert cfg["classifier"]["adapter"]["output"] == "prob1" and cfg["classifier"]["adapter"]["preprocessing"]["mean"] == MEAN
    assert (user_folder / "gan" / "classifier" / "model.safetensors").is_file()
    # explain with no classifier flag at all: the stored weights and settings, the model's own probabilities
    rc, summary = _explain_cli("gan", "expl")
    assert rc == 0
    with torch.no_grad():
        own = _trained("binary")(_own_input(_data_images()))[:, 0]
    got = torch.tensor([im["prob_input"] for im in summary["images"]])
    torch.testing.assert_close(got, own, atol=1e-4, rtol=1e-3)
    # other weights come back (here: the run's copy altered): refused in one line naming both fingerprints
    from medxgan.gan import load_gan_run
    from medxgan.runtime.state import load_weights, save_weights

    w = user_folder / "gan" / "classifier" / "model.safetensors"
    sd = load_weights(w)
    save_weights(w, {k: v + 0.01 if v.is_floating_point() else v for k, v in sd.items()})
    with pytest.raises(MedxganError, match=r"has fingerprint \w+ but the GAN was trained against fingerprint \w+") as e:
        load_gan_run("gan")
    assert "\n" not in str(e.value)


def test_four_class_model_one_vs_rest_from_cli_and_python(user_folder):
    from medxgan import MedXGAN

    assert _train_cli("gan4", "--classifier", "myclf:four", "--classifier-weights", "four.pt", "--target-class", "2", *FLAGS) == 0
    cfg = json.loads((user_folder / "gan4" / "config.json").read_text())
    assert cfg["classifier"]["adapter"]["target_description"] == "class 2 vs rest"
    with pytest.warns(UserWarning, match="below its training gates"):  # a 1-step GAN: said in the terminal ...
        rc, summary = _explain_cli("gan4", "expl4")
    assert rc == 0
    page = (user_folder / "expl4" / "index.html").read_text()  # ... and on the gallery, which names classifier, target and GAN run
    assert "myclf:four" in page and "class 2 vs rest" in page and "1 training steps" in page and "Quality warning" in page
    x = _data_images()
    with torch.no_grad():
        l = _trained("four")(_own_input(x))
    by_hand = torch.sigmoid(l[:, 2] - torch.logsumexp(l[:, [0, 1, 3]], 1))
    torch.testing.assert_close(torch.tensor([im["prob_input"] for im in summary["images"]]), by_hand, atol=1e-4, rtol=1e-3)
    # Python: the same run, no target given again
    mx = MedXGAN.load("gan4", device="cpu", steps=1, restarts=1, minimal_mask_steps=0)
    assert mx.classifier.target_description() == "class 2 vs rest"
    torch.testing.assert_close(mx.classifier.prob(x), by_hand, atol=1e-5, rtol=1e-4)
    # Python: wrap_classifier with the target
    ad = wrap_classifier(_trained("four"), target_class=2, preprocessing=PRE)
    torch.testing.assert_close(ad.prob(x), by_hand, atol=1e-5, rtol=1e-4)
    assert load_classifier("myclf:four", weights="four.pt", preprocessing=PRE, target=ad.target).prob(x).shape == (2,)


def test_another_target_than_the_runs_is_warned_about(user_folder):
    from medxgan.gan import load_gan_run

    assert _train_cli("gan4b", "--classifier", "myclf:four", "--classifier-weights", "four.pt", "--target-class", "2", *FLAGS) == 0
    other = load_classifier("myclf:four", weights="four.pt", preprocessing=PRE, target=Target(positive=(1,)))
    with pytest.warns(UserWarning, match="trained for the target class 2 vs rest but is used for class 1 vs rest"):
        load_gan_run("gan4b", classifier=other)
