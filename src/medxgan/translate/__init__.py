"""Fundus photo <-> fluorescein angiogram translation with CycleGAN (Zhu et al. 2017; Schiffers et al. 2018).

``train_cyclegan`` (train.py; the step: trainer.py), ``apply_translation`` / ``translate`` (apply.py),
``evaluate_translation`` (metrics.py); the run's settings, layout and loading its generators in run.py, the
domains' images in images.py, networks in networks.py, the fake-image history in pool.py.
"""

from medxgan.translate.apply import apply_translation, translate
from medxgan.translate.metrics import evaluate_translation, psnr, ssim
from medxgan.translate.networks import PatchDiscriminator, ResnetGenerator
from medxgan.translate.pool import ImagePool
from medxgan.translate.run import TranslateConfig, load_generator, lr_at_epoch, schedule_text
from medxgan.translate.train import train_cyclegan

__all__ = [
    "train_cyclegan", "apply_translation", "translate", "load_generator", "evaluate_translation", "ssim", "psnr",
    "ResnetGenerator", "PatchDiscriminator", "ImagePool", "TranslateConfig", "lr_at_epoch", "schedule_text",
]
