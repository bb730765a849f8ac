"""GAN presets: a network config (what `build_generator` / `build_discriminator` need) plus the
training options that go with it. Both are plain dataclasses, stored in a run's config.json as dicts,
so a run can always be rebuilt from its config alone.

Presets
-------
``paper-64``   the published 64 x 64 medXGAN (brain MRI): nz1 = 1000, nz2 = 100, unconditional dropout
               discriminator, no spectral norm / EMA / R1 / augmentation, lambda = 2.
``paper-128``  the published 128 x 128 medXGAN (chest X-ray): nz1 = 100, nz2 = 10, lambda = 1.
``fast``       a DCGAN-sized pair for 64 x 64 (>= 4x cheaper per training step than paper-64 on CPU,
               see benchmarks/gan/RESULTS.md), otherwise the paper's training recipe.
``default``    minimal counterfactuals (benchmarks/counterfactual/RESULTS.md): the masked generator
               (``pathology="mask"``: G(z1, z2) = B(z1) (1 - gM) + gM R, so z2 can only act where its mask is
               on and G(z1, 0) is the anatomy B(z1) exactly) trained with the encoder anchor of ``anchored``,
               whose counterfactuals G(E1(x), 0) must also pass the discriminator as real negatives
               (cf_adv_weight 1), stabilised like ``joint`` (EMA of G, lazy R1, DiffAugment translation).
               Explanations use the residual counterfactual of the scan itself, (1 - gM) x + gM B(z1*), with
               the inversion asked to make it negative (w_cf 1) and small (w_min 1), and the generator's mask then
               refined per scan to the minimal one that keeps the counterfactual as negative as the generator's
               or as 95 % of the classifier's real negatives, whichever is less, on a grid 4x coarser than the
               image, with a total-variation weight of 4 (minimal_mask_steps 150, minimal_mask_target "healthy",
               minimal_mask_scale 4, minimal_mask_tv 4 since 2026-12-06 (was 1; a run trained before keeps 1);
               medxgan.explain.minimal_mask). The mask's in-fill is chosen on the run's validation scans
               (minimal_mask_infill "auto" since 2026-12-07, medxgan.explain.infill_selection: the generator's
               anatomy unless a blur or the mean healthy scan restores implanted lesion patterns 0.5 dB better; a
               run trained before keeps "gan").
``joint``      the previous default (until 2026-12-01): one decoder of concat(z1, z2) (the paper's
               generator shape, DCGAN-sized) + class-conditional projection discriminator (with BatchNorm;
               spectral norm learned too slowly and let the classifier be fooled) + lazy R1 (gamma 1, every 4
               steps) + DiffAugment translation on all D inputs (without them D won outright after ~1500
               steps and G collapsed into classifier-fooling texture) + EMA of G + Adam lr 1e-3 (2e-4 barely
               moved G in the few thousand steps a CPU budget allows). Met every training target of the
               GAN monitor in 22 min on 2 CPU cores, but its maps localise worse than plain gradients.
``anchored``   the fast networks + projection D + an encoder anchor (medxgan.gan.encoder): G also
               reconstructs real scans through an encoder E, with a KL term to the prior and the classifier
               loss on the counterfactual of every real positive; inversion then starts from E(x). Measured
               beside ``joint`` in benchmarks/gan/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from medxgan.runtime.checks import check_override
from medxgan.runtime.errors import MedxganError


CLS_TARGETS = ("hard", "real-median")
GAN_LABELS = ("data", "classifier")
CF_MODES = ("generator", "residual")


class _DictConfig:
    """to_dict / from_dict for the config dataclasses below (stored in a run's config.json)."""

    _label = "config"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: Any) -> Any:
        if isinstance(d, cls):
            return d
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise MedxganError(f"{cls._label}: unknown keys {sorted(unknown)}")
        return cls(**d)


@dataclass
class NetConfig(_DictConfig):
    """Everything needed to build G and D.

    arch: "paper" (published layers) or "dcgan" (4x4 stride-2 transposed convs, width `g_width`/`d_width`).
    nz1/nz2: anatomy / pathology latent sizes. size: 64 or 128 (paper), 32/64/128 (dcgan).
    channels: image channels (1 or 3, from the data).
    d_spectral_norm: spectral norm on every D weight. d_projection: class-conditional projection D
    (Miyato & Koyama 2018): D(x, y) = psi(phi(x)) + <embed(y), phi(x)>.
    d_dropout: dropout after each D block (paper: 0.5). d_batchnorm: BN in D blocks but the first (paper).
    d_mbstd: minibatch standard deviation feature before D's head (Karras et al. 2018, groups of 4): lets D
    see a collapsed (too similar) batch of fakes, against mode collapse.
    pathology: "joint" (the paper: one decoder of concat(z1, z2)) or "mask" (an anatomy decoder of z1
    plus a gated pathology mask and content from (z1, z2); G(z1, 0) is the anatomy exactly; networks.py).
    mask_scale (pathology="mask"): the mask's logits are averaged over mask_scale x mask_scale cells and
    upsampled bilinearly, so the mask can only switch on smooth regions of at least that scale, never
    isolated pixels (1 = full resolution, the runs before 2026-12-02).
    """

    _label = "network config"  # not a field: no annotation

    arch: str = "paper"
    size: int = 64
    channels: int = 3
    nz1: int = 1000
    nz2: int = 100
    g_width: int = 32
    d_width: int = 32
    d_spectral_norm: bool = False
    d_projection: bool = False
    d_dropout: float = 0.5
    d_batchnorm: bool = True
    d_mbstd: bool = False
    pathology: str = "joint"
    mask_scale: int = 1


@dataclass
class TrainOptions(_DictConfig):
    """Training-recipe options beyond the networks.

    lambda_cls: weight of the classifier loss (paper: 2 at 64 px, 1 at 128 px).
    lambda_warmup: ramp the classifier-loss weight linearly from 0 to lambda_cls over this many steps
    (0 = off, the paper), so that G first learns images before it is pushed by the classifier.
    ema_decay: EMA of G's weights (0 = off); the EMA copy is the saved generator.
    r1_gamma / r1_every: R1 penalty gamma/2 * ||grad_x D(x_real)||^2, applied lazily every k D steps
    (scaled by k). diffaug: DiffAugment policy applied to every D input, real and fake ("" = off;
    "translation,cutout"). lr / betas: Adam (lr_d: the discriminator's, default = lr).
    recon_weight: > 0 switches on the encoder anchor (medxgan.gan.encoder): an encoder E is trained with
    G so that G(E1(x), E2(x) [positives only]) reconstructs real scans (L1, this weight); kl_weight
    keeps E's codes on N(0, I); cf_weight (default lambda_cls) pushes G(E1(x_pos), 0) to the negative
    class; the reconstructions are also shown to D as fakes, weighted by adv_weight like the samples.
    Minimality of the pathology change, on every positive the G step makes (prior samples, and with the
    encoder anchor also the reconstructions of real positives): prox_weight * mean|G(z1, z2) - G(z1, 0)|;
    for pathology="mask" generators mask_weight * mean(M) (L1 of the mask) and tv_weight * mean(|dM/dx| +
    |dM/dy|) (total variation: one compact region rather than speckle).
    cf_adv_weight (encoder anchor only): the counterfactuals G(E1(x), 0) of the real batch are also shown to
    D as fakes of the negative class, and G is trained to make them pass as real negatives with this
    weight: "negative" then means "looks like a real healthy scan to D", not only "below the
    classifier's threshold" (a dimmed lesion passes the classifier; D has never seen one in a negative).
    cf_mode: which counterfactual of a real positive the cf_weight / cf_adv_weight terms see: "generator"
    (G(E1(x), 0), the runs before 2026-12-02) or "residual" (masked generators: the scan itself with the
    pathology mask filled by the anatomy, (1 - gM) x + gM B(E1(x)) -- the counterfactual explanations
    show, so training asks for exactly what inversion later needs: a mask over what the classifier sees,
    filled so that the scan passes D as a real healthy one).
    cls_target: the labels of the classifier terms (lambda_cls on samples, cf_weight on counterfactuals).
    "hard" (the paper): 0 / 1, so the loss keeps pushing G's classes past anything real scans show (measured
    on the demo phantoms: the anatomy G(z1, 0) at logit -5.7 where real healthy chest scans sit at a median
    of -1.8) and an in-fill by that anatomy heals healthy tissue "beyond healthy". "real-median": soft labels
    sigmoid(the classifier's median logit on the training split's real negatives / positives), so each
    class is pulled to where real scans of that class sit for this classifier, from either side. Measured
    (benchmarks/counterfactual/RESULTS.md, 2026-12-06): it calibrates the anatomy (chest B at -1.95) but the
    maps barely move (chest LIG 0.471 -> 0.482) and brain loses a little (alone, 2000 steps: 0.598 -> 0.564):
    not adopted, no preset uses it.
    gan_labels: which labels of the real training scans the GAN learns from (the projection D's class, the encoder
    anchor's z2 = 0 for negatives, the counterfactuals of positives). "data": the data set's labels (every run before
    2026-12-07). "classifier": the frozen classifier's own calls (p >= 0.5), so that the generator learns only what
    the classifier separates -- z2 as "what the classifier sees as pathology" -- and not what the data's labels
    separate by themselves (the fair model-randomisation check: benchmarks/sanity/RESULTS.md).
    """

    _label = "training options"

    lambda_cls: float = 2.0
    recon_weight: float = 0.0
    kl_weight: float = 0.01
    cf_weight: float | None = None
    adv_weight: float = 1.0
    lr_d: float | None = None
    lambda_warmup: int = 0
    ema_decay: float = 0.0
    r1_gamma: float = 0.0
    r1_every: int = 4
    diffaug: str = ""
    lr: float = 2e-4
    prox_weight: float = 0.0
    cf_adv_weight: float = 0.0
    mask_weight: float = 0.0
    tv_weight: float = 0.0
    cf_mode: str = "generator"
    cls_target: str = "hard"
    gan_labels: str = "data"
    beta1: float = 0.5
    beta2: float = 0.999

    # options added after runs were stored, with the value those runs trained with: written to a run's
    # config only when set otherwise, so that an older run's stored preset still equals its preset on resume
    LEGACY_VALUES = {"cls_target": "hard", "gan_labels": "data"}

    def __post_init__(self) -> None:
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if not (k in self.LEGACY_VALUES and v == self.LEGACY_VALUES[k])}

    def validate(self) -> None:
        """Value rules beyond the field types (also run after get_preset's overrides)."""
        if self.cf_mode not in CF_MODES:
            raise MedxganError(f"training options: cf_mode must be one of {', '.join(CF_MODES)}, got {self.cf_mode!r}", arg="cf_mode")
        if self.cls_target not in CLS_TARGETS:
            raise MedxganError(f"training options: cls_target must be one of {', '.join(CLS_TARGETS)}, got {self.cls_target!r}", arg="cls_target")
        if self.gan_labels not in GAN_LABELS:
            raise MedxganError(f"training options: gan_labels must be one of {', '.join(GAN_LABELS)}, got {self.gan_labels!r}", arg="gan_labels")



@dataclass
class Preset:
    """A network config, its training recipe, and the inversion defaults that go with them (keyword
    arguments of :func:`medxgan.gan.inversion.invert`, applied when a run of this preset is loaded for
    explanations unless the caller sets them; e.g. which counterfactual the maps explain)."""

    name: str
    net: NetConfig
    train: TrainOptions = field(default_factory=TrainOptions)
    description: str = ""
    inversion: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "net": self.net.to_dict(), "train": self.train.to_dict(), "description": self.description,
                "inversion": dict(self.inversion)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preset":
        return cls(name=d["name"], net=NetConfig.from_dict(d["net"]), train=TrainOptions.from_dict(d["train"]),
                   description=d.get("description", ""), inversion=dict(d.get("inversion") or {}))


def _dcgan_net(channels: int, **kw: Any) -> NetConfig:
    """The DCGAN-sized 64 px pair shared by fast, joint, anchored and default (projection D unless overridden)."""
    base = dict(arch="dcgan", size=64, channels=channels, nz1=128, nz2=16, g_width=16, d_width=16,
                d_spectral_norm=False, d_projection=True, d_dropout=0.0, d_batchnorm=True)
    return NetConfig(**{**base, **kw})


#: the published medXGAN networks, by image size: (nz1, nz2, lambda_cls, the data the paper trained them on)
_PAPER = {64: (1000, 100, 2.0, "brain MRI"), 128: (100, 10, 1.0, "chest X-ray")}


def _paper(channels: int, size: int) -> Preset:
    nz1, nz2, lambda_cls, data = _PAPER[size]
    return Preset(
        f"paper-{size}",
        NetConfig(arch="paper", size=size, channels=channels, nz1=nz1, nz2=nz2),
        TrainOptions(lambda_cls=lambda_cls),
        f"published {size}x{size} medXGAN ({data}), faithful",
    )


def _fast(channels: int) -> Preset:
    return Preset(
        "fast",
        _dcgan_net(channels, d_projection=False),
        TrainOptions(lambda_cls=2.0),
        "DCGAN-sized 64x64 networks, otherwise the paper's recipe (unconditional D)",
    )


def _joint(channels: int) -> Preset:
    return Preset(
        "joint",
        _dcgan_net(channels),
        TrainOptions(lambda_cls=2.0, ema_decay=0.999, lr=1e-3, r1_gamma=1.0, r1_every=4, diffaug="translation"),
        "fast networks + class-conditional projection D (BatchNorm) + R1 + DiffAugment(translation) + EMA of G, Adam lr 1e-3",
    )


def _anchored(channels: int) -> Preset:
    return Preset(
        "anchored",
        _dcgan_net(channels),
        TrainOptions(lambda_cls=2.0, recon_weight=10.0, kl_weight=0.01, adv_weight=0.5, lr=1e-3, lr_d=2e-4),
        "fast networks + projection D + encoder anchor (reconstruction, KL, counterfactual of real positives); "
        "G/E lr 1e-3, D lr 2e-4",
    )


def _default(channels: int) -> Preset:
    return Preset(
        "default",
        _dcgan_net(channels, pathology="mask"),
        TrainOptions(lambda_cls=2.0, recon_weight=10.0, kl_weight=0.01, adv_weight=0.5, cf_adv_weight=1.0, lr=1e-3, lr_d=2e-4,
                     ema_decay=0.999, r1_gamma=1.0, r1_every=4, diffaug="translation", cf_mode="residual"),
        "masked generator (anatomy B(z1) + gated pathology mask) + projection D + encoder anchor whose "
        "residual counterfactuals (1-gM)x + gM B(E1(x)) must pass the classifier and D as real negatives + EMA/R1/DiffAugment; "
        "explanations use the residual counterfactual of the scan",
        inversion=dict(counterfactual="residual", w_cf=1.0, w_min=1.0, minimal_mask_steps=150, minimal_mask_target="healthy",
                       minimal_mask_scale=4, minimal_mask_tv=4.0, minimal_mask_infill="auto"),
    )


PRESETS = {"default": _default, "joint": _joint, "anchored": _anchored, "fast": _fast, "paper-64": partial(_paper, size=64),
           "paper-128": partial(_paper, size=128)}


def get_preset(name: str, channels: int = 3, **overrides: Any) -> Preset:
    """The named preset for `channels`-channel images. `overrides` replace NetConfig or TrainOptions
    fields by name (e.g. ``ema_decay=0.999``, ``d_projection=True``), for experiments."""
    try:
        preset = PRESETS[name](channels)
    except KeyError:
        raise MedxganError(f"preset {name}: unknown preset (choose from {', '.join(PRESETS)})", arg="preset") from None
    net_fields = {f.name for f in dataclasses.fields(NetConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainOptions)}
    for key, value in overrides.items():
        if key in net_fields:
            setattr(preset.net, key, check_override(key, value, getattr(preset.net, key)))
        elif key in train_fields:
            setattr(preset.train, key, check_override(key, value, getattr(preset.train, key)))
        else:
            raise MedxganError(f"preset override {key!r}: not a network or training option")
    preset.train.validate()
    if overrides:
        preset.name = preset.name + "+" + ",".join(f"{k}={v}" for k, v in overrides.items())
    return preset
