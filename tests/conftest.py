"""Shared test fixtures (keep small)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import write_gan_run


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is several times faster than two fighting over a shared, busy
    2-core machine. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write_dicom(path, pixels, photometric="MONOCHROME2", **tags):
    """Minimal uncompressed DICOM (Secondary Capture) with pydicom's documented API; extra tags as keywords."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = np.ascontiguousarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


@pytest.fixture
def write_dicom():
    """``write_dicom(path, pixels uint8/uint16 HxW or HxWx3, photometric=..., **tags) -> path`` (needs pydicom)."""
    pytest.importorskip("pydicom")
    return _write_dicom


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """A tiny GAN run directory in `medxgan train`'s format (helpers.write_gan_run)."""
    return write_gan_run(tmp_path_factory.mktemp("gan"))
