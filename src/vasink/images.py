"""The one image loader of the package: a file, bytes or a PIL image in any mode Pillow opens -> 8-bit RGB.

    from vasink.images import load_image
    load_image("photo.jpg")                        # a user's image: as an image viewer shows it
    load_image("COCO_val2014_42.jpg", photo=False)  # a benchmark's image: as the official evaluations read it

Two kinds of image come in, and they are read two ways:

- **a user's image** (``vasink sinks/attention --image``, ``vasink.analysis``; ``photo=True``): EXIF
  orientation applied (a phone photo stands upright, as every viewer shows it) and transparent pixels laid
  on white;
- **a benchmark's image** (every loader of ``vasink.eval``; ``photo=False``): read as LLaVA's and
  lmms-eval's evaluations read it, ``Image.open(f).convert("RGB")``: no EXIF rotation (the published
  numbers were measured on the stored pixels) and the alpha channel dropped, so a score stays comparable
  with theirs.

Either way, the modes that ``convert("RGB")`` gets wrong are brought to 8 bits first: 16-bit grayscale
(``I;16``, ``I;16B``, ...) and 32-bit integer grayscale (``I``) are scaled down from their bit depth, where
``convert`` clips every value above 255 to white; float grayscale (``F``) is read as [0, 1] when it stays
in that range, else as [0, 255]. Palette, CMYK, YCbCr, LAB, HSV and 1-bit images convert as Pillow does.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I")
WHITE = (255, 255, 255)


def load_image(source, *, photo: bool = True) -> Image.Image:
    """``source``: a path, image bytes or a PIL image; returns a new 8-bit RGB image (see the module's doc).

    Raises FileNotFoundError / PermissionError / IsADirectoryError for a file that cannot be read, and PIL's
    UnidentifiedImageError (an OSError) for one that is not an image."""
    if isinstance(source, Image.Image):
        return to_rgb(source, photo=photo)
    opened = Image.open(io.BytesIO(source)) if isinstance(source, (bytes, bytearray)) else Image.open(Path(source))
    with opened as image:
        image.load()
        return to_rgb(image, photo=photo)


def to_rgb(image: Image.Image, *, photo: bool = True) -> Image.Image:
    """An 8-bit RGB copy of ``image`` (see the module's doc for ``photo``)."""
    if photo:
        image = ImageOps.exif_transpose(image)  # a copy, without the orientation tag
    if image.mode in HIGH_BIT_DEPTH or image.mode == "F":
        image = _eight_bit(image)
    if image.mode == "La":  # premultiplied alpha: Pillow converts it to LA, not to RGB
        image = image.convert("LA")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        image = image.convert("RGBA")  # a palette's transparent index becomes alpha (no Pillow warning)
        if photo:
            background = Image.new("RGBA", image.size, WHITE + (255,))
            image = Image.alpha_composite(background, image)
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


def _eight_bit(image: Image.Image) -> Image.Image:
    """A grayscale image of more than 8 bits (or float) as mode L, scaled from its own range."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scale = 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else 1.0
    elif image.mode == "I" and np.max(values, initial=0) <= 255:  # an 8-bit picture held as 32-bit integers
        scale = 1.0
    else:  # 16-bit samples (Pillow opens 16-bit PNG / TIFF grayscale as I;16 or I)
        scale = 255.0 / 65535.0
    eight = np.clip(np.nan_to_num(values * scale), 0, 255).round().astype(np.uint8)
    return Image.fromarray(eight)  # 2-D uint8: mode L
