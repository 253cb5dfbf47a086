"""Image columns keep the full image and a thumbnail (144 × 144 at most, as Dataverse's
default image size), always a JPEG: made once, when a chunked upload completes or, for an
image uploaded in a batch, soon after (:mod:`fieldsync.files.thumbnails`)."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from fieldsync.errors import BadRequest

THUMBNAIL = (144, 144)


_NOT_IMAGE = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
    OSError,
    SyntaxError,
    ValueError,
)


def check_image(data: bytes) -> None:
    """A 400 unless ``data`` starts as an image Pillow reads (its header and, where the
    format has them, its checksums), of a size it would decode: what an upload checks before
    the thumbnail is made."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                probe.verify()
    except _NOT_IMAGE as exc:
        raise BadRequest(f"an image column takes an image (PNG, JPEG, GIF, …): {exc}") from None


def thumbnail(data: bytes) -> bytes:
    """The JPEG thumbnail of an image (transparency over white); anything Pillow cannot
    read as an image is a 400."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                probe.verify()
            with Image.open(io.BytesIO(data)) as image:
                image.thumbnail(THUMBNAIL)  # a JPEG decodes at the scale it needs (draft)
                rgba = image.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                out = io.BytesIO()
                flat.save(out, "JPEG", quality=85)
                return out.getvalue()
    except _NOT_IMAGE as exc:
        raise BadRequest(f"an image column takes an image (PNG, JPEG, GIF, …): {exc}") from None
