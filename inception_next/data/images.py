"""Decoding: every layout hands its image as bytes to `decode`, so an image means the same pixels wherever it came
from. The errors the data code raises live here too."""

import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DatasetError(UserError, ValueError):
    """A dataset or data setting that is not as expected; the message names it and what was expected."""


class UnreadableImageError(DatasetError):
    pass


def is_image_file(path):
    return path.suffix.lower() in IMAGE_EXTENSIONS


def decode(data, name):
    """Decode image bytes to 8-bit RGB, whatever the mode (grayscale, CMYK, palette with transparency, 16-bit) and
    whatever the name's extension says (ImageNet ships a PNG named .JPEG): `name` is only for the error."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit (or 32-bit integer) grayscale: keep the top byte rather than clip at 255.
                shift = 8 if image.mode.startswith("I;16") else 24
                image = Image.fromarray((np.asarray(image).astype(np.uint32) >> shift).astype(np.uint8))
            elif image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise UnreadableImageError(f"{name}: unreadable image (not a format PIL recognises)") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise UnreadableImageError(f"{name}: unreadable image ({error})") from None


class Encoded(NamedTuple):
    """A JPEG left for the training device to decode (`data.device_from: decode`): its bytes, the image opened but not
    decoded (PIL read its header: size and mode), and its name, for an error."""
    data: bytes
    header: Image.Image
    name: str


DEVICE_DECODABLE = ("RGB", "L")  # JPEG modes that nvJPEG decodes to RGB as PIL does; CMYK and YCCK are decoded here


def peek(data, name):
    """For decoding on the device: a whole colour or greyscale JPEG stays `Encoded`; any other image (a PNG, a CMYK
    JPEG) is decoded here (`decode`), as is a cut one or what PIL cannot open, to raise decode's error."""
    try:
        header = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return decode(data, name)
    whole = data.rstrip(b"\0").endswith(b"\xff\xd9")  # its end-of-image marker: a cut download goes to decode
    if header.format == "JPEG" and header.mode in DEVICE_DECODABLE and whole:
        return Encoded(data, header, str(name))
    return decode(data, name)


def load_rgb(path):
    """An image file decoded to 8-bit RGB (see `decode`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UnreadableImageError(f"{path}: unreadable image ({error.strerror})") from None
    return decode(data, path)
