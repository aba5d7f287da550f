"""Pixel data for WADO-RS: frames as stored (PS3.18 §10.4.1.1.3: native frames cut from Pixel
Data, encapsulated ones as their fragments), decoded to Explicit VR Little Endian when asked,
and rendered images (§10.4.1.1.4, §8.3.5.1: window, viewport, quality) as JPEG or PNG."""

from __future__ import annotations

import io
from contextlib import suppress
from typing import Any

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.encaps import get_frame
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID

EXPLICIT_LE = "1.2.840.10008.1.2.1"
#: native syntaxes whose frames are byte for byte those of Explicit VR Little Endian
_LITTLE_NATIVE = {"1.2.840.10008.1.2", EXPLICIT_LE}


class PixelError(ValueError):
    """What a frame or rendering request cannot have: `status` is the HTTP status to answer
    (404 frame out of range, 406 a syntax we cannot produce, 400 a bad parameter)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def load(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


def frames(ds: Dataset, numbers: list[int], decode: bool) -> tuple[str, list[bytes]]:
    """(transfer syntax, frame bytes) of frames `numbers` (1-based): as stored, or with
    `decode` in Explicit VR Little Endian (decompressed by pydicom where it can)."""
    syntax = str(ds.file_meta.TransferSyntaxUID)
    count = int(ds.get("NumberOfFrames") or 1)
    if "PixelData" not in ds:
        raise PixelError(404, "the instance has no pixel data")
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad:
        raise PixelError(404, f"frame {bad[0]} is out of range: the instance has {count}")
    if decode and syntax not in _LITTLE_NATIVE:
        return EXPLICIT_LE, [_decoded(ds, n, count) for n in numbers]
    if UID(syntax).is_encapsulated:
        return syntax, [get_frame(ds.PixelData, n - 1, number_of_frames=count) for n in numbers]
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(
        ds.BitsAllocated
    )
    if bits % 8:
        raise PixelError(406, "frames of 1-bit pixel data do not end on byte boundaries")
    size = bits // 8
    data = bytes(ds.PixelData)
    if syntax == "1.2.840.10008.1.2.2":  # big endian: swap to little when asked for it
        if not decode:
            return syntax, [data[(n - 1) * size : n * size] for n in numbers]
        return EXPLICIT_LE, [_decoded(ds, n, count) for n in numbers]
    return syntax, [data[(n - 1) * size : n * size] for n in numbers]


def _decoded(ds: Dataset, number: int, count: int) -> bytes:
    try:
        array = ds.pixel_array
    except Exception as exc:  # no decoder for this syntax here
        raise PixelError(
            406, f"cannot decode {ds.file_meta.TransferSyntaxUID} here ({exc}); ask for "
            "transfer-syntax=* to get the frames as stored"
        ) from None
    frame = array[number - 1] if count > 1 else array
    return np.ascontiguousarray(frame).astype(frame.dtype.newbyteorder("<")).tobytes()


def render(
    ds: Dataset, number: int, media: str, window: tuple[float, float] | None,
    viewport: tuple[int, int] | None, quality: int,
) -> bytes:
    """Frame `number` as an image for a screen: modality LUT, then the requested window (or
    the instance's VOI LUT / window, else its full range), MONOCHROME1 inverted, scaled to
    fit `viewport` (keeping the aspect ratio)."""
    count = int(ds.get("NumberOfFrames") or 1)
    if "PixelData" not in ds:
        raise PixelError(404, "the instance has no pixel data")
    if not 1 <= number <= count:
        raise PixelError(404, f"frame {number} is out of range: the instance has {count}")
    try:
        array = ds.pixel_array
    except Exception as exc:
        raise PixelError(
            406, f"cannot decode {ds.file_meta.TransferSyntaxUID} for rendering ({exc})"
        ) from None
    frame = array[number - 1] if count > 1 else array
    image = _to_8bit(ds, frame, window)
    picture = Image.fromarray(image)
    if viewport is not None:
        picture.thumbnail(viewport)
    out = io.BytesIO()
    if media == "image/png":
        picture.save(out, format="PNG")
    else:
        picture.convert("RGB" if picture.mode not in ("L", "RGB") else picture.mode).save(
            out, format="JPEG", quality=quality
        )
    return out.getvalue()


def _to_8bit(ds: Dataset, frame: Any, window: tuple[float, float] | None) -> Any:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            frame = convert_color_space(frame, photometric, "RGB")
        return _scale(frame.astype(np.float64), None, float(frame.min()), float(frame.max()))
    values = apply_modality_lut(frame, ds).astype(np.float64)
    if window is None and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        with suppress(Exception):  # a malformed VOI LUT: the full range instead
            values = apply_voi_lut(values, ds).astype(np.float64)
    image = _scale(values, window, float(values.min()), float(values.max()))
    return 255 - image if photometric == "MONOCHROME1" else image


def _scale(values: Any, window: tuple[float, float] | None, low: float, high: float) -> Any:
    """Linear window (PS3.3 C.11.2.1.2.1, simplified): center/width, else min..max."""
    if window is not None:
        center, width = window
        low, high = center - width / 2, center + width / 2
    span = max(high - low, 1e-9)
    return (np.clip((values - low) / span, 0, 1) * 255).astype(np.uint8)
