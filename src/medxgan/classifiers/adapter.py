"""The classifier contract: any PyTorch binary classifier -> positive-class logit and probability.

Explanation and GAN code only ever call `adapter.logit(x)` / `adapter.prob(x)` with images in the
project's contract (N x C x H x W in [-1, 1], any size, C = 1 or 3). The adapter owns what the raw
model needs: input size, channel count, value range and mean/std normalisation, and the decoding of
its output (2 logits, 1 logit, 2 probabilities, or a tuple/dict holding one of those).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medxgan.runtime.errors import MedxganError, UserCodeError
from medxgan.runtime.runs import fingerprint_module

OUTPUT_KINDS = ("auto", "logits2", "logit1", "probs2", "prob1")
_EPS = 1e-6


@dataclass
class Preprocessing:
    """What the raw model expects. None means 'leave as is'."""

    input_size: tuple[int, int] | None = None  # (H, W)
    input_channels: int | None = None  # 1 or 3
    input_range: str = "-1,1"  # "-1,1" or "0,1": the value range before mean/std
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size) if self.input_size else None
        d["mean"] = list(self.mean) if self.mean is not None else None
        d["std"] = list(self.std) if self.std is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Preprocessing":
        d = dict(d or {})
        if d.get("input_size") is not None:
            s = d["input_size"]
            d["input_size"] = (int(s), int(s)) if isinstance(s, (int, float)) else (int(s[0]), int(s[1]))
        return cls(**d)


class ClassifierAdapter(nn.Module):
    """Wrap `model` so that `logit(x)` is the positive-class logit for x in [-1, 1].

    Args:
        model: any nn.Module (or TorchScript module) mapping a preprocessed batch to its output.
        output: how to read the output: "logits2" (N x 2 logits; logit = l_pos - l_neg, i.e. the
            log-odds of the softmax), "logit1" (one logit for sigmoid), "probs2" (softmax already
            applied; logit = log p_pos - log p_neg with clamping), "prob1" (sigmoid already applied),
            or "auto" (decided from the first output: 2 columns that are non-negative and sum to 1 ->
            probs2, other 2 columns -> logits2, 1 column -> logit1).
        output_key: index (tuple/list) or key (dict) of the element holding the scores; default the
            first element / the first key.
        positive_index: column of the positive class for 2-column outputs.
        preprocessing: see `Preprocessing`.
    """

    def __init__(
        self,
        model: nn.Module,
        output: str = "auto",
        output_key: int | str | None = None,
        positive_index: int = 1,
        preprocessing: Preprocessing | None = None,
        name: str = "classifier",
    ):
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise MedxganError(f"output {output}: unknown (choose from {', '.join(OUTPUT_KINDS)})", arg="output")
        if positive_index not in (0, 1):
            raise MedxganError(f"positive_index {positive_index}: must be 0 or 1")
        self.model = model
        self.output = output
        self.output_key = output_key
        self.positive_index = positive_index
        self.preprocessing = preprocessing or Preprocessing()
        self.name = name
        pp = self.preprocessing
        self.register_buffer("_mean", torch.tensor(pp.mean, dtype=torch.float32).view(1, -1, 1, 1) if pp.mean is not None else torch.zeros(0), persistent=False)
        self.register_buffer("_std", torch.tensor(pp.std, dtype=torch.float32).view(1, -1, 1, 1) if pp.std is not None else torch.zeros(0), persistent=False)
        self._fingerprint: str | None = None
        # the user's own code (TorchScript, a factory's module): its exceptions are reported in one line
        self.user_code = not type(model).__module__.startswith("medxgan.")
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    # The adapter is always in eval mode: a frozen classifier must not update BN statistics.
    def train(self, mode: bool = True) -> "ClassifierAdapter":
        return super().train(False)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_module(self.model)
        return self._fingerprint

    # ---- preprocessing ------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise MedxganError(f"classifier input must be N x C x H x W, got shape {tuple(x.shape)}")
        pp = self.preprocessing
        if pp.input_channels is not None and x.shape[1] != pp.input_channels:
            x = convert_channels(x, pp.input_channels)
        if pp.input_size is not None and tuple(x.shape[-2:]) != tuple(pp.input_size):
            x = F.interpolate(x, size=tuple(pp.input_size), mode="bilinear", align_corners=False)
        if pp.input_range == "0,1":
            x = (x + 1.0) / 2.0
        if self._mean.numel():
            for key, buf in (("mean", self._mean), ("std", self._std)):
                if buf.shape[1] not in (1, x.shape[1]):
                    raise MedxganError(f"{key} {' '.join(f'{v:g}' for v in buf.flatten().tolist())}: {buf.shape[1]} values for the "
                                       f"{x.shape[1]}-channel input of classifier {self.name} (give {'1' if x.shape[1] == 1 else f'1 or {x.shape[1]}'})", arg=key)
            x = (x - self._mean) / self._std
        return x

    # ---- output decoding ----------------------------------------------------------------------
    def _select(self, out: Any) -> torch.Tensor:
        if isinstance(out, dict):
            if not out:
                raise MedxganError(f"classifier {self.name}: returned an empty dict", arg="classifier")
            key = self.output_key if self.output_key is not None else next(iter(out))
            if key not in out:
                raise MedxganError(f"classifier {self.name}: its output has no key {key!r} (keys: {', '.join(map(str, out))})", arg="classifier")
            out = out[key]
        elif isinstance(out, (tuple, list)):
            idx = int(self.output_key) if self.output_key is not None else 0
            if not -len(out) <= idx < len(out):
                raise MedxganError(f"classifier {self.name}: its output is a sequence of {len(out)}, no element {idx}", arg="classifier")
            out = out[idx]
        if not isinstance(out, torch.Tensor):
            raise MedxganError(f"classifier {self.name}: unsupported output type {type(out).__name__} (expected a tensor, tuple or dict)", arg="classifier")
        return out

    def _decode(self, out: torch.Tensor, n: int) -> torch.Tensor:
        if out.dim() == 1 and out.shape[0] == n:
            out = out.unsqueeze(1)
        if out.dim() != 2 or out.shape[0] != n or out.shape[1] not in (1, 2):
            raise MedxganError(
                f"classifier {self.name}: its output has shape {tuple(out.shape)} for a batch of {n}: not a binary classifier "
                "(expected N x 2 logits/probabilities or N x 1 / N logits)", arg="classifier"
            )
        kind = self.output
        if kind == "auto":
            kind = self._guess_kind(out)
        if kind in ("logits2", "probs2") and out.shape[1] != 2:
            raise MedxganError(f"output {kind}: the classifier returns {out.shape[1]} column(s), not 2", arg="output")
        if kind in ("logit1", "prob1") and out.shape[1] != 1:
            raise MedxganError(f"output {kind}: the classifier returns {out.shape[1]} columns, not 1", arg="output")
        pos, neg = self.positive_index, 1 - self.positive_index
        out = out.float()
        if kind == "logits2":
            return out[:, pos] - out[:, neg]
        if kind == "logit1":
            logit = out[:, 0]
            return logit if pos == 1 else -logit
        if kind == "probs2":
            p = out.clamp(_EPS, 1.0)
            return torch.log(p[:, pos]) - torch.log(p[:, neg])
        p = out[:, 0].clamp(_EPS, 1 - _EPS)  # prob1
        logit = torch.log(p) - torch.log1p(-p)
        return logit if pos == 1 else -logit

    def _guess_kind(self, out: torch.Tensor) -> str:
        if out.shape[1] == 1:
            return "logit1"
        with torch.no_grad():
            looks_like_probs = bool((out >= 0).all() and torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-4))
        self.output = "probs2" if looks_like_probs else "logits2"  # fix the decision after the first call
        return self.output

    # ---- public contract ----------------------------------------------------------------------
    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """Positive-class logit, shape (N,)."""
        out = self._select(self._run_model(self.preprocess(x)))
        if x.requires_grad and torch.is_grad_enabled() and not out.requires_grad:
            # autograd would fail later with a traceback far from the cause (or a GAN would train without the classifier)
            raise MedxganError(f"classifier {self.name}: its output does not depend on its input (no gradient); gradient-based "
                               "explanations and GAN training need a classifier that is differentiable in its input", arg="classifier")
        return self._decode(out, x.shape[0])

    def _run_model(self, x: torch.Tensor) -> Any:
        if not self.user_code:
            return self.model(x)
        try:
            return self.model(x)
        except MedxganError:
            raise
        except (Exception, SystemExit) as exc:  # the user's code: one line naming it (the CLI's --traceback shows the trace)
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise UserCodeError(f"classifier {self.name} raised {type(exc).__name__}: {first} while scoring a batch of {x.shape[0]}") from exc

    def check_finite(self, x: torch.Tensor, what: str = "the data", grad: bool = True) -> None:
        """Refuse a classifier whose outputs on ``x`` are not finite (it would make every result NaN) and,
        with ``grad``, one whose output does not depend on its input (no gradient): one probe pass made
        before any work, so that the mistake is one line instead of an autograd traceback mid-run."""
        with torch.enable_grad() if grad else torch.no_grad():
            logit = self.logit(x.detach().clone().requires_grad_(grad)).detach()
        bad = int((~torch.isfinite(logit)).sum())
        if bad:
            raise MedxganError(f"classifier {self.name}: {bad} of {logit.numel()} outputs are not finite (NaN/inf) on {what}; "
                               "a classifier must output finite scores", arg="classifier")

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        """Positive-class probability, shape (N,)."""
        return torch.sigmoid(self.logit(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(x)

    def two_class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """N x 2 logits [0, logit] whose softmax equals (1 - p, p): for tools that want a class axis."""
        logit = self.logit(x)
        return torch.stack([torch.zeros_like(logit), logit], dim=1)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "output": self.output,
            "output_key": self.output_key,
            "positive_index": self.positive_index,
            "preprocessing": self.preprocessing.to_dict(),
            "fingerprint": self.fingerprint,
        }

    def check(self, channels: int, size: int | tuple[int, int], device: torch.device | str = "cpu") -> None:
        """Run a dummy batch once so that an unsupported output fails early with a clear message."""
        h, w = (size, size) if isinstance(size, int) else size
        with torch.no_grad():
            out = self.logit(torch.zeros(2, channels, h, w, device=device))
        if not torch.isfinite(out).all():
            raise MedxganError(f"{self.name}: classifier returns non-finite outputs on a blank image")


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """1 -> 3 by repetition, 3 -> 1 by ITU-R 601 luminance (differentiable)."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if c == 3 and channels == 1:
        w = torch.tensor([0.2989, 0.5870, 0.1140], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    raise MedxganError(f"cannot convert {c}-channel images to {channels} channels")


def wrap_classifier(model: nn.Module, output: str = "auto", **kwargs: Any) -> ClassifierAdapter:
    """Convenience: `wrap_classifier(my_model, output="probs2", preprocessing=Preprocessing(...))`."""
    return ClassifierAdapter(model, output=output, **kwargs)
