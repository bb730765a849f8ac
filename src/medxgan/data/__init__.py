"""Images in, tensors out: dataset layouts (class folders, masks, CSV boxes) and formats (PNG/JPEG/TIFF/BMP
8/16-bit, DICOM). Model tensors are float32 in [-1, 1], C x H x W with C = 1 or 3.

The phantom generators live in :mod:`medxgan.data.phantoms` (imported on demand, not here).
"""

from medxgan.data.datasets import ImageDataset, boxes_to_mask, load_dataset
from medxgan.data.imageio import (
    IMAGE_EXTENSIONS,
    ImageInfo,
    collect_image_files,
    convert_channels,
    image_to_tensor,
    is_image_file,
    list_images,
    load_image_tensor,
    probe_image,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
)
from medxgan.data.layout import DatasetIndex, Sample, build_index, hash_split, resolve_mapping

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetIndex",
    "ImageDataset",
    "ImageInfo",
    "Sample",
    "boxes_to_mask",
    "build_index",
    "collect_image_files",
    "convert_channels",
    "hash_split",
    "image_to_tensor",
    "is_image_file",
    "list_images",
    "load_dataset",
    "load_image_tensor",
    "probe_image",
    "read_image",
    "read_mask",
    "resize_image",
    "resize_mask",
    "resolve_mapping",
]
