"""``infill="auto"``: choose the minimal mask's in-fill on the run's own validation scans, without lesion ground truth.

Which in-fill works depends on the data: the generator's anatomy B(z1*) is the best measured in-fill on the brain and
chest phantoms, and the worst on real MRI (Colin27: area-matched IoU 0.303 vs 0.549 with a blur or a learned in-fill),
where the generator does not render real cortex (benchmarks/perturbation/RESULTS.md). On every family measured, the
in-fills rank by the counterfactual's gain against the lesion-free twin almost exactly as they rank by IoU, but a
user has no twins. This module measures the same thing from what a user has, labelled validation scans:

1. each validation positive i gives a lesion pattern ``d_i = gM_i (x_i - B_i)``: the scan's deviation from the
   generator's anatomy inside the generator's pathology mask (inversion as the explanation does it);
2. it is implanted into a validation negative j: ``x_c = clamp(x_j + d_i, -1, 1)``;
3. ``x_c`` goes through the explanation's own path (inversion, the generator's mask gM_c, each candidate in-fill F),
   and F is scored against the untouched negative x_j where the pattern was implanted: the PSNR of F vs x_j with the
   squared errors weighted by ``|d_i|`` (so the lesion's core counts most, where the minimal mask will be).

No candidate sees x_j. The candidate with the highest PSNR is chosen, but a change from the generator's own in-fill
(the method's default) must pay by :data:`MARGIN_DB`: measured gaps were 1.8-2.2 dB on Colin27 and the generator's
in-fill was best on both phantom families (benchmarks/perturbation/RESULTS.md, "Choosing the in-fill"). Candidates:
``gan``, ``blur``, ``mean``, and the learned in-fill of a given inpainter; ``inpaint`` (biharmonic) is left out: seconds
per scan, and it never won. The choice is computed once per (GAN, classifier, data, settings) and kept next to the
GAN run (``infill_selection.json``) when the run folder is writable; a run moved where its data is not (trained on a GPU
machine, explained on a laptop) keeps the choice made for its GAN and classifier, saying so.

Written by hand: the selection is part of the method (no library does it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from medxgan.explain.infill import LEARNED_INFILLS, InfillInputs, make_infill
from medxgan.gan.inversion import InversionConfig, counterfactual_images, invert
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.tensors import frozen

__all__ = ["AUTO_CANDIDATES", "MARGIN_DB", "InfillSelection", "score_infills", "choose", "select_infill_for_run"]

AUTO_CANDIDATES = ("gan", "blur", "mean")  # + the learned in-fill of a given inpainter
MARGIN_DB = 0.5
SELECTION_FILE = "infill_selection.json"
SELECTION_VERSION = 1


@dataclass
class InfillSelection:
    """What ``infill="auto"`` chose, and why.

    Attributes:
        chosen: the in-fill used (one of the candidates).
        scores_db: candidate -> PSNR (dB) of its fill against the untouched negative, weighted by the implanted pattern.
        implanted_db: the same score of the implanted scan itself (no in-fill): what every fill must beat.
        n_pairs: (positive pattern, negative scan) pairs scored.
        data: the validation data they came from.
        margin_db: how much a candidate must beat ``gan`` by to be chosen.
        key: digest of everything the choice depends on (GAN, classifier, data, settings).
    """

    chosen: str
    scores_db: dict[str, float]
    implanted_db: float
    n_pairs: int
    data: str
    margin_db: float = MARGIN_DB
    key: str = ""
    model_key: str = ""  # digest of the GAN, the classifier and the candidates only (the choice kept when the data is gone)
    reused: bool = False  # True: chosen earlier with other inversion settings, the run's data not here to choose again

    def note(self) -> str:
        """One line for the CLI and the records."""
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.scores_db.items(), key=lambda kv: -kv[1]))
        again = ("; chosen earlier for this GAN and classifier with other inversion settings: the data is not here to choose "
                 "again") if self.reused else ""
        return (f"in-fill chosen by --infill auto: {self.chosen} (restores implanted lesion patterns in {self.n_pairs} healthy "
                f"validation scans of {self.data}; PSNR dB {ranked}; no in-fill {self.implanted_db:.2f}{again})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _psnr_weighted(fill: Tensor, truth: Tensor, w: Tensor) -> float:
    """PSNR (dB, value range 2) of ``fill`` against ``truth``, squared errors weighted by ``w`` and pooled over scans."""
    mse = float((w * (fill - truth) ** 2).sum() / w.sum().clamp(min=1e-12))
    return round(10.0 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item(), 3)


def _anatomy_and_mask(generator: torch.nn.Module, classifier: Any, x: Tensor, inversion: InversionConfig,
                      encoder: Any, discriminator: Any) -> tuple[Tensor, Tensor]:
    """(B(z1*), gM(z1*, z2*)) of scans x, inverted as the explanation inverts them."""
    res = invert(generator, classifier, x, inversion, encoder=encoder, discriminator=discriminator)
    with frozen(generator), torch.no_grad():
        _, base, _ = counterfactual_images(generator, res.z1, res.z2, x)
        gm = generator(res.z1, res.z2, return_parts=True)[2]
    return base, gm


def score_infills(generator: torch.nn.Module, classifier: Any, positives: Tensor, negatives: Tensor, candidates: list[str], *,
                  inversion: InversionConfig, encoder: Any = None, discriminator: Any = None, mean_scan: Tensor | None = None,
                  inpainter: Any = None) -> tuple[dict[str, float], float]:
    """(candidate -> weighted PSNR dB, the implanted scan's own PSNR) for pairs (positives[i], negatives[i]); see the
    module docstring. The generator must be masked (``pathology="mask"``)."""
    if not getattr(generator, "masked", False):
        raise MedxganError("infill 'auto': needs a GAN with a pathology mask (the default preset's); this one has none", arg="infill")
    n = min(len(positives), len(negatives))
    if n < 2:
        raise MedxganError(f"infill 'auto': needs validation scans of both classes (found {len(positives)} positive, "
                           f"{len(negatives)} negative)", arg="infill")
    xp, xn = positives[:n], negatives[:n]
    base_p, gm_p = _anatomy_and_mask(generator, classifier, xp, inversion, encoder, discriminator)
    pattern = gm_p * (xp - base_p)
    xc = (xn + pattern).clamp(-1.0, 1.0)
    base_c, gm_c = _anatomy_and_mask(generator, classifier, xc, inversion, encoder, discriminator)
    w = pattern.abs().mean(1, keepdim=True).expand_as(xn)
    scores = {}
    for name in candidates:
        fill = make_infill(name, InfillInputs(images=xc, gan_fill=base_c, gan_mask=gm_c, healthy_mean=mean_scan, inpainter=inpainter))
        scores[name] = _psnr_weighted(fill, xn, w)
    return scores, _psnr_weighted(xc, xn, w)


def choose(scores: dict[str, float], margin_db: float = MARGIN_DB) -> str:
    """The best-scoring candidate; ``gan`` stays unless another beats it by ``margin_db``."""
    best = max(scores, key=lambda k: scores[k])
    if "gan" in scores and scores[best] < scores["gan"] + margin_db:
        return "gan"
    return best


def _validation_split(data: str, mapping: dict[str, Any], size: int, channels: int, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """(positives, negatives) of ``data``'s validation split, ``n`` of each drawn with ``seed``."""
    from medxgan.data import load_dataset

    if not data or not Path(data).is_dir():
        raise MedxganError(f"infill 'auto': the GAN run's data {data or '(none recorded)'} is not there (the in-fill is chosen on its "
                           "validation scans); choose --infill gan|blur|mean|learned|learned-gan instead", arg="infill")
    ds = load_dataset(data, split="val", size=size, channels=channels, **mapping)
    y = torch.tensor(ds.labels, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    pos, neg = (y == 1).nonzero().flatten(), (y == 0).nonzero().flatten()
    pos = pos[torch.randperm(len(pos), generator=g)[:n]]
    neg = neg[torch.randperm(len(neg), generator=g)[:n]]

    def read(idx: Tensor) -> Tensor:  # only the drawn scans are decoded: a large validation split stays on disk
        return torch.stack([ds[int(i)]["image"] for i in idx]) if len(idx) else torch.zeros(0, channels, size, size)

    return read(pos), read(neg)


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached(run: Path | None, key: str, field: str = "key") -> InfillSelection | None:
    """The cached choice whose ``field`` ("key": everything; "model_key": the GAN, classifier and candidates) is ``key``."""
    path = run / SELECTION_FILE if run else None
    if path is None or not path.is_file() or not key:
        return None
    try:
        rec = json.loads(path.read_text())
        sel = InfillSelection(**rec["selection"]) if rec.get("version") == SELECTION_VERSION else None
        return sel if sel is not None and getattr(sel, field) == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable cache is recomputed, never trusted


def _store(run: Path | None, sel: InfillSelection) -> None:
    from medxgan.runtime.atomic import atomic_write_json

    if run is None:
        return
    try:
        atomic_write_json(run / SELECTION_FILE, {"version": SELECTION_VERSION, "selection": sel.to_dict()})
    except OSError:
        pass  # a read-only run folder: the choice is recomputed next time


def select_infill_for_run(mx: Any, data: str, mapping: dict[str, Any] | None = None, *, inpainter: Any = None, n: int = 32,
                          seed: int = 0) -> InfillSelection:
    """The ``auto`` choice for a loaded :class:`~medxgan.explain.model.MedXGANModel` ``mx`` (its generator, classifier,
    encoder and inversion settings) on ``data``'s validation split (``mapping``: class options of ``load_dataset``),
    with the learned in-fill of ``inpainter`` (a loaded Inpainter) as a candidate when given. Cached in the run folder."""
    from medxgan.explain.infill import healthy_mean_from_data
    from medxgan.runtime.runs import fingerprint_module

    engine = mx.engine
    candidates = list(AUTO_CANDIDATES)
    if inpainter is not None:
        candidates.append(next(k for k, v in LEARNED_INFILLS.items() if v == inpainter.variant))
    model = {"generator": fingerprint_module(mx.generator), "classifier": getattr(mx.classifier, "fingerprint", None),
             "candidates": candidates, "inpainter": getattr(inpainter, "path", None), "margin": MARGIN_DB}
    key = _key({**model, "data": str(Path(data).resolve()) if data else "", "mapping": mapping or {},
                "inversion": engine.inversion_config.changes(), "n": n, "seed": seed})
    model_key = _key(model) if model["classifier"] else ""  # a classifier without a fingerprint is never matched by this key
    run = Path(mx.run_path) if getattr(mx, "run_path", None) else None
    hit = _cached(run, key)
    if hit is not None:
        return hit
    if not data or not Path(data).is_dir():  # a run moved to another machine: keep the choice made for this GAN and classifier
        earlier = _cached(run, model_key, "model_key")
        if earlier is not None:
            return dataclasses.replace(earlier, reused=True)
    positives, negatives = _validation_split(data, mapping or {}, mx.size, mx.channels, n, seed)
    mean_scan = healthy_mean_from_data(data, mx.size, mx.channels, mapping) if "mean" in candidates else None
    torch.manual_seed(seed)
    dev = mx.device
    scores, implanted = score_infills(mx.generator, mx.classifier, positives.to(dev), negatives.to(dev), candidates,
                                      inversion=engine.inversion_config, encoder=engine.encoder, discriminator=engine.discriminator,
                                      mean_scan=None if mean_scan is None else mean_scan.to(dev), inpainter=inpainter)
    sel = InfillSelection(chosen=choose(scores), scores_db=scores, implanted_db=implanted, n_pairs=min(len(positives), len(negatives)),
                          data=str(data), key=key, model_key=model_key)
    _store(run, sel)
    return sel
