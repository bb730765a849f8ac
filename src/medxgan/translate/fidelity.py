"""FID / KID of translated images, with a local Inception-v3 file (nothing is ever downloaded), and KID in a
domain feature space that needs no file at all.

The distances are torchmetrics' (``FrechetInceptionDistance`` / ``KernelInceptionDistance`` through
:mod:`medxgan.runtime.quality`, which feeds them features from a callable); only the choice and loading
of the feature network is done here.

Inception-v3 (``--inception-weights FILE``), two well-known files of the TF "2015-12-05" FID network:

* ``inception-2015-12-05.pt`` -- the TorchScript detector of NVIDIA's StyleGAN2-ADA metrics (also used by
  clean-fid): network and weights in one file, called as ``net(uint8 N x 3 x H x W, return_features=True)``
  -> N x 2048 (it resizes to 299 itself). Loaded with ``torch.jit.load``; needs no other package.
* ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid) / ``weights-inception-2015-12-05-6726825d.pth``
  (torch-fidelity): a state dict for torch-fidelity's ``FeatureExtractorInceptionV3``, loaded through
  torchmetrics' ``NoTrainInceptionV3(feature_extractor_weights_path=FILE)`` (the network torchmetrics'
  FID uses by default). Needs ``torch-fidelity`` with a working ``torchvision`` (``pip install
  'medxgan[fid]'``). The file is first opened with ``torch.load(weights_only=True)``: a file that holds
  anything but tensors is refused before torch-fidelity unpickles it.

Both give the 2048-d pool features; gray angiograms are repeated to 3 channels. With the few test images
of a phantom benchmark (30) the FID is strongly biased upwards (2048-d covariances from 30 samples) and
only comparable at equal sample counts; KID is unbiased but noisy.

Domain KID (always computed, no file): KID in the feature space of :class:`DomainFeatures`, a fixed,
randomly initialised (seed 0) four-layer convolutional network on the images' own channels (per-channel
mean and standard deviation of each layer's activations). It is NOT Inception and not trained: it
compares intensity and texture statistics at four scales, not semantics, and its values are comparable
only with other medxgan domain-KID values.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from medxgan.runtime import quality
from medxgan.runtime.errors import MedxganError

__all__ = ["InceptionFeatures", "load_inception", "DomainFeatures", "domain_features", "fid_kid"]

_FILES = ("the TorchScript inception-2015-12-05.pt (StyleGAN2-ADA / clean-fid) or the state dict "
          "pt_inception-2015-12-05-6726825d.pth (pytorch-fid / torch-fidelity)")


class InceptionFeatures:
    """A loaded Inception-v3: ``self(x01)`` maps N x C x H x W images in [0, 1] (C = 1 or 3) to N x 2048."""

    dim = 2048

    def __init__(self, net: nn.Module, kind: str, path: Path, call: Callable[[nn.Module, Tensor], Tensor]):
        self.net, self.kind, self.path, self._call = net, kind, path, call

    @property
    def description(self) -> str:
        return f"Inception-v3 2048-d pool features ({self.kind}: {self.path.name})"

    @torch.no_grad()
    def __call__(self, x01: Tensor) -> Tensor:
        x = x01.expand(-1, 3, -1, -1) if x01.shape[1] == 1 else x01
        u8 = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)  # both networks take 8-bit RGB (the TF graph's input)
        return self._call(self.net, u8).reshape(x.shape[0], -1).double()


def _torchscript_call(net: nn.Module, u8: Tensor) -> Tensor:
    return net(u8, return_features=True)


def _fidelity_call(net: nn.Module, u8: Tensor) -> Tensor:
    return net(u8)


def load_inception(path: str | Path) -> InceptionFeatures:
    """Open a local Inception-v3 FID file (see the module docstring) and check it on one image; every
    problem is a one-line MedxganError naming ``inception_weights``."""
    path = Path(path)
    if not path.is_file():
        raise MedxganError(f"inception_weights {path}: file not found (expected {_FILES}; nothing is downloaded)",
                           arg="inception_weights")
    feats = _load_torchscript(path) if _is_torchscript(path) else _load_state_dict(path)
    try:
        out = feats(torch.rand(1, 3, 64, 64))
    except Exception as exc:  # a network that does not take the FID call
        raise MedxganError(f"inception_weights {path}: the network does not run as an FID Inception ({_first_line(exc)})",
                           arg="inception_weights") from None
    if tuple(out.shape) != (1, 2048):
        raise MedxganError(f"inception_weights {path}: gives features of shape {tuple(out.shape[1:])}, not the 2048 of "
                           f"Inception-v3's pool layer (expected {_FILES})", arg="inception_weights")
    return feats


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())


def _load_torchscript(path: Path) -> InceptionFeatures:
    import warnings

    try:
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; the StyleGAN2-ADA file is one
            # matched by message: torch 2.13 says it as a DeprecationWarning, 2.14 as a FutureWarning
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
            net = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise MedxganError(f"inception_weights {path}: not a loadable TorchScript file ({_first_line(exc)})",
                           arg="inception_weights") from None
    return InceptionFeatures(net, "TorchScript", path, _torchscript_call)


def _load_state_dict(path: Path) -> InceptionFeatures:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MedxganError(f"inception_weights {path}: not an Inception-v3 FID weights file; expected {_FILES} "
                           f"({_first_line(exc)})", arg="inception_weights") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state or "fc.weight" not in state:
        keys = list(state)[:3] if isinstance(state, dict) else type(state).__name__
        raise MedxganError(f"inception_weights {path}: a torch file but not the FID Inception-v3 state dict (no "
                           f"Mixed_7c/fc weights; starts with {keys}); expected {_FILES}", arg="inception_weights")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except Exception as exc:  # torch-fidelity present but its torchvision broken
        raise MedxganError(f"inception_weights {path}: a state-dict Inception file needs torch-fidelity with a working "
                           f"torchvision (pip install 'medxgan[fid]'), or give the TorchScript inception-2015-12-05.pt "
                           f"({_first_line(exc)})", arg="inception_weights") from None
    try:
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path))
    except ModuleNotFoundError as exc:
        raise MedxganError(f"inception_weights {path}: a state-dict Inception file needs torch-fidelity (pip install "
                           f"'medxgan[fid]'), or give the TorchScript inception-2015-12-05.pt ({_first_line(exc)})",
                           arg="inception_weights") from None
    except Exception as exc:
        raise MedxganError(f"inception_weights {path}: does not match torch-fidelity's Inception-v3 ({_first_line(exc)})",
                           arg="inception_weights") from None
    return InceptionFeatures(net.eval(), "torch-fidelity state dict via torchmetrics", path, _fidelity_call)


class DomainFeatures(nn.Module):
    """The domain-KID feature network: NOT Inception, not trained. Four 3x3 stride-2 convolutions (C -> 32 ->
    64 -> 128 -> 256, ReLU), weights drawn from N(0, 2 / fan_in) with a fixed torch.Generator seed, biases 0;
    the features are the per-channel mean and standard deviation of every layer's output (2 x 480 = 960-d).
    Deterministic: the same seed gives the same network on every machine with the same torch."""

    widths = (32, 64, 128, 256)

    def __init__(self, in_ch: int, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        chans = (in_ch,) + self.widths
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans[:-1], chans[1:]))
        with torch.no_grad():
            for c in self.convs:
                c.weight.copy_(torch.randn(c.weight.shape, generator=gen) * (2.0 / c.weight[0].numel()) ** 0.5)
                c.bias.zero_()
        self.requires_grad_(False).eval()
        self.dim = 2 * sum(self.widths)
        self.seed = seed

    @torch.no_grad()
    def forward(self, x01: Tensor) -> Tensor:
        h, out = x01.to(self.convs[0].weight.dtype) * 2 - 1, []  # torchmetrics may have cast the net to float64
        for c in self.convs:
            h = torch.relu(c(h))
            out += [h.mean((2, 3)), h.std((2, 3))]
        return torch.cat(out, 1).double()


def domain_features(channels: int, seed: int = 0) -> DomainFeatures:
    return DomainFeatures(channels, seed)


DOMAIN_TEXT = ("KID in a domain feature space, NOT Inception: a fixed, randomly initialised (seed 0) 4-layer conv "
               "net on the images' own channels, features = per-channel mean and std of each layer (960-d); "
               "compares intensity/texture statistics, comparable only with other medxgan domain-KID values")


def fid_kid(real01: Tensor, fake01: Tensor, inception: InceptionFeatures | None, *, seed: int = 0) -> dict[str, Any]:
    """FID and KID (Inception, when given) and the domain KID of ``fake01`` against ``real01`` (N x C x H x W
    in [0, 1]); KID over 100 subsets of min(1000, N) images (torchmetrics' default kernel, degree 3)."""
    out: dict[str, Any] = {"n_real": len(real01), "n_fake": len(fake01)}
    if inception is not None:
        out["fid"] = quality.fid(inception, inception.dim, real01, fake01, batch_size=16)
        out["kid_mean"], out["kid_std"] = quality.kid(inception, inception.dim, real01, fake01, batch_size=16, seed=seed)
    net = domain_features(real01.shape[1])
    out["domain_kid_mean"], out["domain_kid_std"] = quality.kid(net, net.dim, real01, fake01, seed=seed)
    return out
