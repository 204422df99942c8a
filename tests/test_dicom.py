"""DICOM input: rescale, windowing, MONOCHROME1 inversion, garbage and undecodable files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, SecondaryCaptureImageStorage, generate_uid

from toothseg.data.io import read_image
from toothseg.errors import InputError


def _write(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", ts=ExplicitVRLittleEndian,
           pixel_bytes: bytes | None = None, **tags) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "PX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.astype(np.uint16).tobytes() if pixel_bytes is None else pixel_bytes
    ds.save_as(path, enforce_file_format=True)


def _pixels() -> np.ndarray:
    a = np.zeros((16, 32), np.uint16)
    a[:, :8] = 0
    a[:, 8:16] = 1000
    a[:, 16:24] = 2000
    a[:, 24:] = 4000
    return a


def test_monochrome2_minmax(tmp_path):
    _write(tmp_path / "a.dcm", _pixels())
    out = read_image(tmp_path / "a.dcm")
    assert out.dtype == np.uint8 and out.shape == (16, 32)
    np.testing.assert_array_equal(out[0, [0, 8, 16, 24]], [0, 64, 128, 255])  # 1000/4000*255 = 63.75


def test_monochrome1_is_inverted(tmp_path):
    _write(tmp_path / "m1.dcm", _pixels(), photometric="MONOCHROME1")
    out = read_image(tmp_path / "m1.dcm")
    np.testing.assert_array_equal(out[0, [0, 8, 16, 24]], [255, 191, 127, 0])


def test_rescale_and_window(tmp_path):
    # stored 0..4000 -> real = 0.5 * stored - 100 = -100, 400, 900, 1900; window [400, 1400]
    _write(tmp_path / "w.dcm", _pixels(), RescaleSlope="0.5", RescaleIntercept="-100", WindowCenter="900",
           WindowWidth="1000")
    out = read_image(tmp_path / "w.dcm").astype(int)
    expected = np.clip((np.array([-100, 400, 900, 1900]) - 400) / 1000 * 255, 0, 255)
    assert np.all(np.abs(out[0, [0, 8, 16, 24]] - expected) <= 1.5)


def test_rescale_monochrome1_window(tmp_path):
    _write(tmp_path / "w1.dcm", _pixels(), photometric="MONOCHROME1", RescaleSlope="2", RescaleIntercept="0",
           WindowCenter="4000", WindowWidth="8000")
    out = read_image(tmp_path / "w1.dcm").astype(int)
    expected = 255 - np.array([0, 2000, 4000, 8000]) / 8000 * 255
    assert np.all(np.abs(out[0, [0, 8, 16, 24]] - expected) <= 1.5)


def test_garbage_dicom_is_one_line_error(tmp_path):
    p = tmp_path / "bad.dcm"
    p.write_bytes(b"this is not a dicom file at all" * 10)
    with pytest.raises(InputError) as e:
        read_image(p)
    assert "bad.dcm" in str(e.value) and "\n" not in str(e.value)


def test_truncated_uncompressed_pixels(tmp_path):
    p = tmp_path / "short.dcm"
    _write(p, _pixels())
    ds = pydicom.dcmread(p)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(p)
    with pytest.raises(InputError, match="short.dcm.*corrupt"):
        read_image(p)


def test_compressed_without_decoder_names_the_package(tmp_path):
    try:  # a decoder present here would decode the bytes; the missing-decoder path is what this test is about
        import pylibjpeg  # noqa: F401

        pytest.skip("pylibjpeg installed")
    except ImportError:
        pass
    p = tmp_path / "j2k.dcm"
    _write(p, _pixels(), ts=JPEG2000Lossless,
           pixel_bytes=pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64]))
    with pytest.raises(InputError) as e:
        read_image(p)
    msg = str(e.value)
    assert "j2k.dcm" in msg and "pylibjpeg" in msg and "\n" not in msg


def test_no_pixel_data(tmp_path):
    p = tmp_path / "sr.dcm"
    _write(p, _pixels())
    ds = pydicom.dcmread(p)
    del ds.PixelData
    ds.save_as(p)
    with pytest.raises(InputError, match="no pixel data"):
        read_image(p)
