"""medXGAN: networks + presets, GAN training against a frozen classifier, loading a trained run.

    from medxgan.gan import train_gan, load_gan_run
    train_gan("data/brain", "runs/clf", "runs/gan", preset="default", steps=5000)
    gan = load_gan_run("runs/gan")          # .generator (eval), .classifier, .oracle, .config
    train_encoder("runs/gan")               # optional: inversion then starts from E(x), ~10x fewer steps

Latent inversion lives in `medxgan.gan.inversion`. The explanation pipeline sits above this package, in
`medxgan.pipeline` (`from medxgan import MedXGAN`); gan/ never imports it. `medxgan.gan.MedXGAN` is a
deprecated alias (0.1), resolved on use by the module ``__getattr__`` below.
"""

import sys as _sys
import warnings as _warnings

from medxgan.gan.encoder_train import train_encoder
from medxgan.gan.networks import Discriminator, Generator, build_discriminator, build_generator, count_parameters, sample_latents
from medxgan.gan.presets import PRESETS, NetConfig, Preset, TrainOptions, get_preset
from medxgan.gan.run import GanRun, load_gan_run, load_generator
from medxgan.gan.train import GANTrainer, GanTrainConfig, train_gan

__all__ = [
    "Discriminator",
    "Generator",
    "build_discriminator",
    "build_generator",
    "count_parameters",
    "sample_latents",
    "PRESETS",
    "NetConfig",
    "Preset",
    "TrainOptions",
    "get_preset",
    "GanRun",
    "load_gan_run",
    "load_generator",
    "GANTrainer",
    "GanTrainConfig",
    "train_gan",
    "train_encoder",
]



def __getattr__(name: str):
    """The deprecated alias ``medxgan.gan.MedXGAN`` (0.1). Not an import (gan/ sits below the pipeline): importing
    ``medxgan.gan`` runs the package root first, which loads ``medxgan.pipeline``, so the class is already in
    ``sys.modules`` when the alias is used."""
    pipeline = _sys.modules.get("medxgan.pipeline") if name == "MedXGAN" else None
    if pipeline is None or not hasattr(pipeline, "MedXGAN"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _warnings.warn("medxgan.gan.MedXGAN is deprecated; use `from medxgan import MedXGAN`", DeprecationWarning, stacklevel=2)
    return pipeline.MedXGAN
