"""Reading X-rays and masks from disk: PNG/JPEG/BMP/TIFF (8/16-bit, gray or RGB) and DICOM.

Every reader returns a 2-D array and raises `InputError` (one line: file, problem, fix) for anything it cannot use,
so batch jobs can report the item and carry on.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from toothseg.atomic import atomic_path
from toothseg.errors import InputError

log = logging.getLogger("toothseg")

# Largest image read, in pixels: PIL's decompression-bomb limit (89.5 Mpx, e.g. 9500x9400). An OPG is 3-20 Mpx;
# beyond this a decoded 16-bit image alone takes gigabytes, so the file is refused before decoding.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
# A label image (one integer per tooth, e.g. FDI numbers) has few distinct values; a lossy or grayscale picture
# saved as a "mask" has many. 64 leaves room for any dentition plus background.
MAX_LABEL_VALUES = 64


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _to_gray(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3].astype(np.float32)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
            return arr[..., 0]
        gray = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        if np.issubdtype(arr.dtype, np.integer):
            gray = np.rint(gray)  # round, not truncate: a pure-gray RGB must map to the same gray level
        return gray.astype(arr.dtype)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[..., 0]
    raise InputError(path, f"unsupported array shape {arr.shape}", "save it as a 2-D grayscale or RGB image")


def to_uint8(arr: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Map any numeric image to uint8; 8-bit input is kept as it is, deeper input is windowed (default: min-max)."""
    if arr.dtype == np.uint8 and window is None:
        return arr
    a = arr.astype(np.float64)
    lo, hi = window if window is not None else (float(a.min()), float(a.max()))
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip((a - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _check_size(path: Path, h: int, w: int) -> None:
    if h * w > MAX_PIXELS:
        raise InputError(path, f"image is {w}x{h} = {h * w / 1e6:.0f} Mpx, over the {MAX_PIXELS / 1e6:.0f} Mpx limit",
                         "downscale it (an OPG needs no more than ~20 Mpx) or crop it")


def _read_tiff(path: Path) -> np.ndarray:
    """First page of a TIFF. Further pages (a stack or a multi-page scan) are never read as colour planes."""
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tf:
            n_pages = len(tf.pages)
            page = tf.pages[0]
            shape = page.shape
            planar_rgb = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and len(shape) == 3
            h, w = (shape[1], shape[2]) if planar_rgb else (shape[0], shape[1])
            _check_size(path, int(h), int(w))
            arr = page.asarray()
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(path, f"unreadable TIFF ({exc.__class__.__name__})", "re-export the file") from None
    if arr.size == 0:
        raise InputError(path, "unreadable TIFF (no image data)", "re-export the file")
    if n_pages > 1:
        log.warning("%s: TIFF has %d pages; using the first", path, n_pages)
    if planar_rgb and arr.ndim == 3 and arr.shape[0] in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _read_raster(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path)
    try:
        with warnings.catch_warnings():  # PIL warns above its limit; _check_size refuses with one line instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            _check_size(path, im.size[1], im.size[0])
            if getattr(im, "n_frames", 1) > 1:
                log.warning("%s: image has %d frames; using the first", path, im.n_frames)
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.array(im)
                return arr.astype(np.uint16) if arr.max(initial=0) <= 65535 and arr.min(initial=0) >= 0 else arr
            if im.mode == "P":
                im = im.convert("RGB")
            if im.mode == "LA":
                im = im.convert("L")
            return np.array(im)
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"image is over the {MAX_PIXELS / 1e6:.0f} Mpx limit ({exc})",
                         "downscale it (an OPG needs no more than ~20 Mpx) or crop it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(path, f"unreadable or truncated image ({exc})", "re-export or remove the file") from None


def read_dicom(path: Path) -> np.ndarray:
    """Read a DICOM X-ray as float pixels after rescale, VOI LUT/window and MONOCHROME1 inversion, mapped to uint8."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError, KeyError) as exc:
        raise InputError(path, f"not a readable DICOM file ({exc.__class__.__name__})", "check it is a DICOM file") from None
    if "PixelData" not in ds:
        raise InputError(path, "DICOM file has no pixel data", "export the image series, not a report or SR object")
    _check_size(path, int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0))
    try:
        raw = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError for codecs it lacks
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", str(ts))
        if ts is not None and getattr(ts, "is_compressed", False):
            raise InputError(
                path,
                f"cannot decode DICOM pixel data (transfer syntax {name}: {exc.__class__.__name__})",
                "install 'pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg' (or 'python-gdcm') to decode compressed DICOM",
            ) from None
        # uncompressed data that will not decode is truncated or has inconsistent size tags: no package helps
        raise InputError(path, f"corrupt DICOM pixel data ({name}: {exc.__class__.__name__})",
                         "re-export the image from the PACS or device") from None
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raw = raw[0]  # multi-frame: take the first frame (shape alone cannot tell frames from RGB)
    arr = raw.astype(np.float64)
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    arr = arr * slope + intercept
    window: tuple[float, float] | None = None
    try:
        from pydicom.pixels import apply_voi_lut

        if "VOILUTSequence" in ds:
            arr = apply_voi_lut(arr, ds).astype(np.float64)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            c, w = (float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)
                    for v in (ds.WindowCenter, ds.WindowWidth))
            window = (c - w / 2.0, c + w / 2.0)
    except Exception as exc:
        raise InputError(path, f"invalid VOI LUT/window ({exc})", "fix or remove the window tags") from None
    if arr.ndim == 3:
        arr = _to_gray(arr, path)
    out = to_uint8(arr, window)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1: high values are dark; teeth must be bright for the model
    return out


def read_image(path: str | Path) -> np.ndarray:
    """Read an X-ray as a 2-D uint8 array (bright = dense, as on a normal OPG)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found", "check the path")
    if path.suffix.lower() in (".dcm", ".dicom"):
        return read_dicom(path)
    arr = _to_gray(_read_raster(path), path)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(path, f"unsupported pixel type {arr.dtype}", "save it as 8- or 16-bit grayscale")
    if arr.size == 0 or min(arr.shape) < 8:
        raise InputError(path, f"image is too small ({arr.shape})", "use the full-size X-ray")
    return to_uint8(arr)


def mask_from_array(arr: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Turn a mask array into bool: {0,1}, {0,255} and integer label images (non-zero = tooth) are accepted."""
    path = Path(path)
    if arr.ndim == 3:
        if arr.shape[2] >= 3 and not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])):
            # a colour-coded label image: any non-black pixel is tooth
            arr = arr[..., :3].max(axis=2)
        else:
            arr = arr[..., 0]
    if arr.ndim != 2:
        raise InputError(path, f"mask has shape {arr.shape}", "save the mask as a 2-D image")
    if arr.dtype == bool:
        return arr.copy()
    if np.issubdtype(arr.dtype, np.floating):
        vals = np.unique(arr)
        if not np.all(np.isin(vals, (0.0, 1.0))):
            raise InputError(path, "mask has fractional values", "save a binary mask: 0 = background, 1 or 255 = tooth")
        return arr > 0
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(path, f"unsupported mask type {arr.dtype}", "save an 8-bit PNG mask")
    vals = np.unique(arr)
    if len(vals) > MAX_LABEL_VALUES:
        raise InputError(
            path,
            f"mask has {len(vals)} distinct values (a lossy or grayscale image, not a mask)",
            "save masks losslessly (PNG) with 0 = background and non-zero = tooth",
        )
    if vals.min(initial=0) < 0:
        raise InputError(path, "mask has negative values", "use 0 for background and positive labels for teeth")
    if arr.dtype == np.uint8 and vals.max(initial=0) == 255 and np.any((vals >= 1) & (vals <= 8)) \
            and np.any((vals >= 247) & (vals <= 254)):
        # values just above 0 and just below 255 together: a 0/255 mask blurred by compression or resampling
        raise InputError(path, "mask values near 0 and near 255 (a lossy or resampled mask)",
                         "save masks losslessly (PNG) with 0 = background and 255 = tooth; resize with nearest")
    return arr > 0


def read_mask_array(path: str | Path) -> np.ndarray:
    """Read a mask file's stored values unchanged (for checks that need them, e.g. `toothseg check`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "mask file not found", "check the path")
    if path.suffix.lower() in (".dcm", ".dicom"):
        import pydicom

        try:
            return pydicom.dcmread(str(path)).pixel_array
        except Exception as exc:
            raise InputError(path, f"unreadable DICOM mask ({exc.__class__.__name__})", "save the mask as PNG") from None
    if path.suffix.lower() in (".jpg", ".jpeg"):
        raise InputError(path, "JPEG masks are lossy (edges get spurious values)",
                         "save masks as PNG with 0 = background and 255 = tooth")
    return _read_raster(path)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a tooth mask as a 2-D bool array."""
    return mask_from_array(read_mask_array(path), path)


def _for_cv2(arr: np.ndarray) -> np.ndarray:
    """A uint8/bool 2-D or RGB array as cv2 writes it: bool -> 0/255, RGB -> BGR."""
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr


def encode_png(arr: np.ndarray, compression: int | None = None) -> bytes:
    """PNG bytes of a uint8/bool 2-D or RGB array (bool -> 0/255), for pages and HTTP replies that embed it;
    ``compression`` 0-9 (None: OpenCV's default). Raises ValueError when OpenCV cannot encode it."""
    params = [cv2.IMWRITE_PNG_COMPRESSION, compression] if compression is not None else []
    ok, buf = cv2.imencode(".png", _for_cv2(arr), params)
    if not ok:
        raise ValueError("could not encode PNG")
    return buf.tobytes()


def write_png(path: str | Path, arr: np.ndarray) -> None:
    """Write a uint8/bool 2-D or RGB array as PNG (bool -> 0/255), creating parent folders (`atomic_path` does)."""
    arr = _for_cv2(arr)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), arr):
            raise InputError(path, "could not write PNG", "check the folder is writable and the disk has space")
