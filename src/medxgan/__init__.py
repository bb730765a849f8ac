"""medxgan: visual explanations for medical image classifiers through a generative latent space.

    from medxgan import MedXGAN        # the explanation pipeline (medxgan.pipeline)
"""

from medxgan.pipeline import MedXGAN
from medxgan.runtime.version import __version__

__all__ = ["MedXGAN", "__version__"]
