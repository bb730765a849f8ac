"""The classifier contract (adapter), built-in architectures, loading and training."""

from medxgan.classifiers.adapter import ClassifierAdapter, Preprocessing, Target, convert_channels, wrap_classifier
from medxgan.classifiers.architectures import ARCHITECTURES, PaperCNN, SmallResNet, build_architecture, gradcam_layer, last_conv_layer
from medxgan.classifiers.loading import as_classifier, load_classifier
from medxgan.classifiers.storage import check_fingerprint, load_recorded_classifier, store_classifier
from medxgan.classifiers.training import train_classifier


__all__ = [
    "ClassifierAdapter",
    "Preprocessing",
    "Target",
    "convert_channels",
    "wrap_classifier",
    "ARCHITECTURES",
    "PaperCNN",
    "SmallResNet",
    "build_architecture",
    "last_conv_layer",
    "gradcam_layer",
    "as_classifier",
    "load_classifier",
    "load_recorded_classifier",
    "store_classifier",
    "check_fingerprint",
    "train_classifier",
]
