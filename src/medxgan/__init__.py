"""medxgan: visual explanations for medical image classifiers through a generative latent space."""

__version__ = "0.1.0"
