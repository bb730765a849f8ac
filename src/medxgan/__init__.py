"""medxgan: visual explanations for medical image classifiers through a generative latent space.

    from medxgan import MedXGAN        # the explanation pipeline (medxgan.pipeline)
"""

from medxgan import gan as _gan
from medxgan.pipeline import MedXGAN
from medxgan.runtime.version import __version__

_gan.MedXGAN = MedXGAN

__all__ = ["MedXGAN", "__version__"]
