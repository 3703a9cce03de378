"""Cheap image-file checks at load time: format, size, truncation and EXIF orientation from the header, so that a
missing, truncated or unsupported file is an error naming it rather than a crash or a grey image mid-epoch.

JPEG and PNG only (what ``tf.io.decode_image`` decodes without surprises). JPEG scans are also decoded at 1/8
scale with libjpeg's warnings captured: a JPEG cut short with its end marker kept decodes partly grey without
an error. ``verify="decode"`` also decodes every image fully.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct

import numpy as np

SUPPORTED_FORMATS = ("jpeg", "png")
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT (C4), JPG (C8), DAC (CC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_TAIL_BYTES = 1024


class ImageError(Exception):
    """An unreadable image; ``reason`` is a short code for reports, ``str()`` the detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """Header facts of an image file. ``width``/``height`` are the stored (not EXIF-rotated) size."""

    format: str
    width: int
    height: int
    orientation: int = 1  # EXIF orientation 1..8; 1 = as stored

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) after applying the EXIF orientation (5-8 swap the sides)."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


def sniff_format(head: bytes) -> str | None:
    """Image format from the first bytes (``"jpeg"``, ``"png"``, ``"gif"``, ...), or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def inspect_image(source: str | os.PathLike | bytes, verify: str = "header") -> ImageInfo:
    """The :class:`ImageInfo` of a JPEG / PNG file (a path or encoded bytes), checked to the ``verify`` level:
    ``"header"`` (format, size, the end-of-image marker), ``"decode"`` (also a full decode) or ``"none"`` (only
    that the file exists).

    Raises:
        ImageError: reason ``missing_file``, ``unsupported_format``, ``truncated_image`` or ``corrupt_image``.
    """
    if isinstance(source, (bytes, bytearray)):
        f = io.BytesIO(source)
        size = len(source)
    else:
        if not os.path.isfile(source):
            raise ImageError("missing_file", "image file not found")
        f = open(source, "rb")  # noqa: SIM115 - closed below
        size = os.fstat(f.fileno()).st_size
    with f:
        if verify == "none":
            return ImageInfo("unknown", 0, 0)
        if size == 0:
            raise ImageError("unsupported_format", "empty file (0 bytes): not an image")
        head = f.read(32)
        fmt = sniff_format(head)
        if fmt is None:
            raise ImageError("unsupported_format", "not an image file (unknown format)")
        if fmt not in SUPPORTED_FORMATS:
            raise ImageError("unsupported_format", f"unsupported image format {fmt!r}; use JPEG or PNG")
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read()
        if fmt == "png":
            info = _png_info(head)
            if b"IEND" not in tail:
                raise ImageError("truncated_image", "truncated PNG (no IEND chunk at the end)")
        else:
            f.seek(2)
            info = _jpeg_info(f)
            # 0xFFD9 cannot occur in entropy-coded data (0xFF is stuffed): its absence means truncation.
            if b"\xff\xd9" not in tail:
                raise ImageError("truncated_image", "truncated JPEG (no end-of-image marker)")
            f.seek(0)
            _check_jpeg_data(f.read())
        if info.width <= 0 or info.height <= 0:
            raise ImageError("corrupt_image", f"image header gives size {info.width}x{info.height}")
        if verify == "decode":
            f.seek(0)
            _full_decode(f.read(), info)
        return info


def _check_jpeg_data(data: bytes) -> None:
    """A JPEG cut short with its end marker kept (or damaged inside its scans) decodes "successfully" as a
    partly grey image; libjpeg's warning is the only sign, so it is turned into an error here."""
    from keras_retinanet.imaging import jpeg_data_warnings

    warnings = jpeg_data_warnings(data)
    if warnings:
        raise ImageError(
            "truncated_image",
            f"truncated or corrupt JPEG data (libjpeg: {'; '.join(dict.fromkeys(warnings))}): it would decode "
            "partly grey",
        )


def _png_info(head: bytes) -> ImageInfo:
    if head[12:16] != b"IHDR":
        raise ImageError("corrupt_image", "PNG without an IHDR header")
    width, height = struct.unpack(">II", head[16:24])
    return ImageInfo("png", width, height)


def _jpeg_info(f) -> ImageInfo:
    """Walks the JPEG marker segments up to the start of frame; reads the EXIF orientation on the way."""
    orientation = 1
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise ImageError("corrupt_image", "JPEG header ends before the frame header")
        code = marker[1]
        if code == 0xFF:  # fill byte
            f.seek(-1, io.SEEK_CUR)
            continue
        if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:  # markers without a length
            continue
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            raise ImageError("corrupt_image", "JPEG header ends before the frame header")
        (length,) = struct.unpack(">H", length_bytes)
        if length < 2:
            raise ImageError("corrupt_image", f"JPEG header has a bad segment length ({length})")
        if code in _SOF_MARKERS:
            data = f.read(5)
            if len(data) < 5:
                raise ImageError("corrupt_image", "JPEG frame header is cut")
            height, width = struct.unpack(">HH", data[1:5])
            return ImageInfo("jpeg", width, height, orientation)
        segment = f.read(length - 2)
        if code == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            orientation = _exif_orientation(segment[6:])


def _exif_orientation(tiff: bytes) -> int:
    """Tag 0x0112 of IFD0 of an EXIF TIFF block; 1 when absent or unreadable (never fails the image)."""
    try:
        endian = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(endian + "I", tiff[4:8])
        (count,) = struct.unpack(endian + "H", tiff[ifd : ifd + 2])
        for k in range(count):
            entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
            tag, _, _ = struct.unpack(endian + "HHI", entry[:8])
            if tag == 0x0112:
                (value,) = struct.unpack(endian + "H", entry[8:10])
                return int(value) if 1 <= value <= 8 else 1
    except (KeyError, struct.error, IndexError):
        pass
    return 1


def _full_decode(data: bytes, info: ImageInfo) -> None:
    import cv2  # local: only for verify="decode"

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.shape[0] != info.height or image.shape[1] != info.width:
        raise ImageError("corrupt_image", "image data cannot be decoded")
