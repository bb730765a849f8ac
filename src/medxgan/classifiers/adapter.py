"""The classifier contract: any PyTorch classifier -> the target's logit and probability.

Explanation and GAN code only ever call `adapter.logit(x)` / `adapter.prob(x)` with images in the
project's contract (N x C x H x W in [-1, 1], any size, C = 1 or 3). The adapter owns what the raw
model needs: input size, channel count, value range and mean/std normalisation, and the decoding of
its output (2 logits, 1 logit, 2 probabilities, K-class logits/probabilities, multi-label sigmoid
outputs, or a tuple/dict holding one of those) into one logit for the *target* (see :class:`Target`).

The decoding is never guessed silently: ``output="auto"`` decides once, from the first batch it sees
(the commands pass real images first), by the rule in :meth:`ClassifierAdapter.decide_output`, says
what it decided (a stage line on stdout), and refuses outputs that could be either (one column whose values all lie in
[0, 1] may be a probability or a logit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medxgan.runtime.errors import MedxganError, UserCodeError
from medxgan.runtime.runs import fingerprint_module

OUTPUT_KINDS = ("auto", "logits2", "logit1", "probs2", "prob1", "logits", "probs")
# "logits"/"probs": N x K scores of any K (softmax over the K classes, or per-column sigmoid with a
# multi-label target); the 2/1 forms are the same with the column count checked.
_LOGIT_KINDS = ("logits2", "logit1", "logits")
_EPS = 1e-6
_SUM_TOL = 1e-4  # rows of softmax probabilities sum to 1 within this


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


@dataclass
class Target:
    """Which decision of a multi-class or multi-label model is explained (one logit per image).

    * ``positive`` (and optional ``negative``, default every other class): softmax outputs; the logit
      is ``logsumexp(l[positive]) - logsumexp(l[negative])`` over the logits ``l`` (the log-odds of
      "one of the positive classes" against "one of the negative ones"); for probabilities
      ``log(sum p[positive]) - log(sum p[negative])``. ``positive=(K,)`` is class K against the rest.
    * ``multilabel`` K: independent sigmoid outputs; the logit is column K (a probability column is
      turned into its logit).
    None of them: a binary model (1 or 2 columns; ``positive_index`` picks the positive column).
    """

    positive: tuple[int, ...] | None = None
    negative: tuple[int, ...] | None = None
    multilabel: int | None = None

    def __post_init__(self) -> None:
        self.positive = _class_tuple(self.positive, "positive_classes")
        self.negative = _class_tuple(self.negative, "negative_classes")
        if self.multilabel is not None:
            if not isinstance(self.multilabel, int) or isinstance(self.multilabel, bool) or self.multilabel < 0:
                raise MedxganError(f"multilabel {self.multilabel}: must be a class index >= 0", arg="multilabel")
            if self.positive is not None or self.negative is not None:
                raise MedxganError("multilabel: give either a multi-label class or positive/negative classes, not both", arg="multilabel")
        if self.negative is not None and self.positive is None:
            raise MedxganError("negative_classes: needs positive_classes (or target_class) too", arg="negative_classes")
        if self.positive and self.negative and set(self.positive) & set(self.negative):
            both = sorted(set(self.positive) & set(self.negative))
            raise MedxganError(f"negative_classes {' '.join(map(str, both))}: also positive", arg="negative_classes")

    @classmethod
    def build(cls, target_class: int | None = None, positive_classes: Sequence[int] | None = None,
              negative_classes: Sequence[int] | None = None, multilabel: int | None = None) -> "Target | None":
        """The target from the user's options (None when none is given: a binary model)."""
        if target_class is not None and positive_classes is not None:
            raise MedxganError("target_class: give either target_class or positive_classes", arg="target_class")
        if target_class is not None:
            if not isinstance(target_class, int) or isinstance(target_class, bool) or target_class < 0:
                raise MedxganError(f"target_class {target_class}: must be a class index >= 0", arg="target_class")
            positive_classes = (target_class,)
        if positive_classes is None and negative_classes is None and multilabel is None:
            return None
        return cls(positive_classes, negative_classes, multilabel)

    def to_dict(self) -> dict[str, Any]:
        return {"positive": list(self.positive) if self.positive is not None else None,
                "negative": list(self.negative) if self.negative is not None else None, "multilabel": self.multilabel}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Target | None":
        if not d:
            return None
        return cls(d.get("positive"), d.get("negative"), d.get("multilabel"))

    def describe(self) -> str:
        """For reports: ``class 2 vs rest``, ``classes 1,2 vs 0``, ``label 3 (multi-label)``."""
        if self.multilabel is not None:
            return f"label {self.multilabel} (multi-label, sigmoid)"
        pos = ",".join(map(str, self.positive or ()))
        neg = "rest" if self.negative is None else ",".join(map(str, self.negative))
        return f"class{'es' if len(self.positive or ()) > 1 else ''} {pos} vs {neg}"


def _class_tuple(v: Any, name: str) -> tuple[int, ...] | None:
    if v is None:
        return None
    vals = (v,) if isinstance(v, int) else tuple(v)
    if not vals or any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in vals):
        raise MedxganError(f"{name} {' '.join(map(str, vals))}: must be one or more class indices >= 0", arg=name)
    if len(set(vals)) != len(vals):
        raise MedxganError(f"{name} {' '.join(map(str, vals))}: a class is listed twice", arg=name)
    return tuple(int(c) for c in vals)


class ClassifierAdapter(nn.Module):
    """Wrap `model` so that `logit(x)` is the target's logit for x in [-1, 1].

    Args:
        model: any nn.Module (or TorchScript module / torch.export program's module) mapping a
            preprocessed batch to its output.
        output: how to read the output: "logits2" (N x 2 logits; logit = l_pos - l_neg, i.e. the
            log-odds of the softmax), "logit1" (one logit for sigmoid), "probs2" (softmax already
            applied; logit = log p_pos - log p_neg with clamping), "prob1" (sigmoid already applied),
            "logits" / "probs" (N x K of any K: softmax, or per-column sigmoid with a multi-label
            target), or "auto" (decided once from the first batch: see :meth:`decide_output`).
        output_key: index (tuple/list) or key (dict) of the element holding the scores; default the
            first element / the first key.
        positive_index: column of the positive class of a 2-column output (0 or 1; 0 flips the sign of
            a 1-column output). For a K-class output an index >= 2 means ``target_class``.
        preprocessing: see `Preprocessing`.
        target: the class(es) explained for a multi-class / multi-label model (see :class:`Target`);
            an output of more than 2 columns needs one.
    """

    def __init__(
        self,
        model: nn.Module,
        output: str = "auto",
        output_key: int | str | None = None,
        positive_index: int = 1,
        preprocessing: Preprocessing | None = None,
        name: str = "classifier",
        target: Target | None = None,
    ):
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise MedxganError(f"output {output}: unknown (choose from {', '.join(OUTPUT_KINDS)})", arg="output")
        if not isinstance(positive_index, int) or isinstance(positive_index, bool) or positive_index < 0:
            raise MedxganError(f"positive_index {positive_index}: must be a class index >= 0", arg="positive_index")
        if positive_index >= 2:  # a K-class model's class: the one-vs-rest target
            if target is not None:
                raise MedxganError(f"positive_index {positive_index}: give either positive_index or a target, not both", arg="positive_index")
            target, positive_index = Target(positive=(positive_index,)), 1
        if target is not None and target.multilabel is not None and output not in ("auto", "logits", "probs", "logit1", "prob1"):
            raise MedxganError(f"output {output}: a multi-label target reads independent sigmoid columns (output logits or probs)", arg="output")
        self.model = model
        self.output = output
        self.output_decision: str | None = None  # what "auto" decided and why (None: the output was given)
        self.output_key = output_key
        self.positive_index = positive_index
        self.target = target
        self.preprocessing = preprocessing or Preprocessing()
        self.name = name
        self.source: dict[str, Any] | None = None  # where it was loaded from (classifiers.loading); None for an object
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
        if out.dim() != 2 or out.shape[0] != n:
            raise MedxganError(f"classifier {self.name}: its output has shape {tuple(out.shape)} for a batch of {n} "
                               "(expected N x K scores, or N)", arg="classifier")
        k = out.shape[1]
        if k > 2 and self.target is None:
            raise MedxganError(
                f"classifier {self.name}: its output has shape {tuple(out.shape)} for a batch of {n}: {k} columns, not a binary classifier; "
                "choose what to explain: --target-class C "
                "(class C vs the rest), --positive-classes/--negative-classes (softmax), or --multilabel C (sigmoid outputs) "
                "(Python: target_class=, positive_classes=, negative_classes=, multilabel=)", arg="classifier")
        self._check_target(k)
        if self.output == "auto":
            self.decide_output(out)
        kind = self.output
        want = {"logits2": 2, "probs2": 2, "logit1": 1, "prob1": 1}.get(kind)
        if want is not None and k != want:
            raise MedxganError(f"output {kind}: the classifier returns {k} column(s), not {want}", arg="output")
        out = out.float()
        logits = kind in _LOGIT_KINDS
        t = self.target
        if t is not None and t.multilabel is not None:
            col = out[:, t.multilabel]
            return col if logits else _prob_to_logit(col)
        if k == 1:
            logit = out[:, 0] if logits else _prob_to_logit(out[:, 0])
            return logit if self.positive_index == 1 else -logit
        pos, neg = self._classes(k)
        if logits:  # log-odds of "one of pos" vs "one of neg" under the softmax
            return torch.logsumexp(out[:, pos], 1) - torch.logsumexp(out[:, neg], 1)
        p = out.clamp(min=0.0)
        return torch.log(p[:, pos].sum(1).clamp(min=_EPS)) - torch.log(p[:, neg].sum(1).clamp(min=_EPS))

    def _classes(self, k: int) -> tuple[list[int], list[int]]:
        """(positive, negative) class columns of a softmax output of k columns."""
        if self.target is None:  # binary: 2 columns
            return [self.positive_index], [1 - self.positive_index]
        pos = list(self.target.positive or ())
        neg = list(self.target.negative) if self.target.negative is not None else [c for c in range(k) if c not in pos]
        if not neg:
            raise MedxganError(f"target {self.target.describe()}: no negative class left among the classifier's {k} classes", arg="target_class")
        return pos, neg

    def _check_target(self, k: int) -> None:
        t = self.target
        if t is None:
            if k == 2 and self.positive_index > 1:
                raise MedxganError(f"positive_index {self.positive_index}: the classifier returns 2 columns", arg="positive_index")
            return
        if t.multilabel is not None:
            used, what = [t.multilabel], "multilabel"
        else:
            used, what = list(t.positive or ()) + list(t.negative or ()), "target_class" if t.negative is None and len(t.positive or ()) == 1 else "positive_classes"
            if k == 1:
                raise MedxganError(f"target {t.describe()}: the classifier returns one column (a binary sigmoid output); leave the target out", arg=what)
        bad = [c for c in used if c >= k]
        if bad:
            raise MedxganError(f"target {t.describe()}: class {bad[0]} does not exist, the classifier returns {k} column(s) (classes 0-{k - 1})", arg=what)

    def decide_output(self, out: torch.Tensor) -> str:
        """Decide what an "auto" output is from a probe batch ``out`` (N x K), once, and say so (stdout).

        The rule: a multi-label target or a single column -> sigmoid; if every value lies in [0, 1] that
        is ambiguous (a probability, or a logit that happens to be small) and is refused, asking for the
        kind; otherwise logits. Two or more columns (softmax) -> probabilities when every value is >= 0
        and each row sums to 1, logits otherwise (with a hint when every value lies in [0, 1]).
        """
        with torch.no_grad():
            v = out.detach().float()
            in01 = bool(((v >= 0) & (v <= 1)).all())
            k = v.shape[1]
            sigmoid = k == 1 or (self.target is not None and self.target.multilabel is not None)
            if sigmoid:
                if in01:
                    ask = "--classifier-output prob1 or logit1 (Python: output='prob1' / 'logit1')" if k == 1 else \
                        "--classifier-output probs or logits (Python: output='probs' / 'logits')"
                    raise MedxganError(f"classifier {self.name}: its output is ambiguous: {'one column' if k == 1 else f'{k} sigmoid columns'} "
                                       f"with every value in [0, 1] on a probe batch of {v.shape[0]} (a probability with a sigmoid inside, "
                                       f"or a logit?); say which with {ask}", arg="classifier")
                kind, why = ("logit1" if k == 1 else "logits"), "values outside [0, 1]"
            else:
                sums_to_1 = bool((v >= 0).all() and torch.allclose(v.sum(1), torch.ones_like(v[:, 0]), atol=_SUM_TOL))
                if sums_to_1:
                    kind, why = ("probs2" if k == 2 else "probs"), "every value >= 0 and each row sums to 1 (softmax probabilities)"
                else:
                    kind, why = ("logits2" if k == 2 else "logits"), "rows do not sum to 1 (softmax logits)"
                    if in01:  # unusual for logits: say what to give if they are independent sigmoid probabilities
                        why += ("; every value is in [0, 1]: if these are independent sigmoid probabilities, give --multilabel C "
                                "with --classifier-output probs")
        self.output = kind
        self.output_decision = f"output auto -> {kind}: {why} on a probe batch of {v.shape[0]}"
        # a stage line (stdout, like the project's other stage lines): stderr carries only warnings and errors
        print(f"[medxgan] classifier {self.name}: {self.output_decision}; give --classifier-output to override", flush=True)
        return kind

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
            "target": self.target.to_dict() if self.target is not None else None,
            "target_description": self.target_description(),
            "output_decision": self.output_decision,
            "preprocessing": self.preprocessing.to_dict(),
            "fingerprint": self.fingerprint,
            "source": self.source,
        }

    def target_description(self) -> str:
        """What the logit is the log-odds of, for reports: ``class 1 vs 0`` for a binary model."""
        if self.target is not None:
            return self.target.describe()
        return f"class {self.positive_index} vs {1 - self.positive_index}"

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


def _prob_to_logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(_EPS, 1 - _EPS)
    return torch.log(p) - torch.log1p(-p)


def wrap_classifier(model: nn.Module, output: str = "auto", *, target_class: int | None = None, positive_classes: Sequence[int] | None = None,
                    negative_classes: Sequence[int] | None = None, multilabel: int | None = None, **kwargs: Any) -> ClassifierAdapter:
    """Convenience: ``wrap_classifier(my_model, output="probs2", preprocessing=Preprocessing(...))``.

    Multi-class / multi-label models: ``target_class=2`` (class 2 vs the rest), ``positive_classes=[1, 2]``
    (with ``negative_classes=[0]``, default every other class), or ``multilabel=3`` (sigmoid column 3).
    Other keyword arguments go to :class:`ClassifierAdapter` (``output_key``, ``positive_index``,
    ``preprocessing``, ``name``)."""
    target = Target.build(target_class, positive_classes, negative_classes, multilabel)
    if target is not None:
        kwargs["target"] = target
    return ClassifierAdapter(model, output=output, **kwargs)
