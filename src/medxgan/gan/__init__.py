"""medXGAN: networks + presets, GAN training against a frozen classifier, loading a trained run.

    from medxgan.gan import train_gan, load_gan_run
    train_gan("data/brain", "runs/clf", "runs/gan", preset="default", steps=5000)
    gan = load_gan_run("runs/gan")          # .generator (eval), .classifier, .oracle, .config
    train_encoder("runs/gan")               # optional: inversion then starts from E(x), ~10x fewer steps

Latent inversion and the explanation pipeline live in `medxgan.gan.inversion` / `medxgan.gan.model`
(imported on first use: `from medxgan.gan import MedXGAN`).
"""

from medxgan.gan.encoder_train import train_encoder
from medxgan.gan.networks import Discriminator, Generator, build_discriminator, build_generator, count_parameters, sample_latents
from medxgan.gan.presets import PRESETS, NetConfig, Preset, TrainOptions, get_preset
from medxgan.gan.run import GanRun, load_gan_run, load_generator
from medxgan.gan.train import GANTrainer, train_gan

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
    "train_gan",
    "train_encoder",
]


def __getattr__(name: str):  # lazy: the explanation side imports classifiers/explain machinery
    if name == "MedXGAN":
        from medxgan.gan.model import MedXGAN

        return MedXGAN
    raise AttributeError(f"module 'medxgan.gan' has no attribute {name!r}")
