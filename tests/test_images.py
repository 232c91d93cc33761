"""vasink.images: the one image loader, through every caller (analysis --image, eval samples, hub bytes)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from vasink.analysis.samples import open_image
from vasink.eval.data import _image_from_bytes
from vasink.eval.registry import Sample
from vasink.images import load_image

RAMP = np.tile(np.linspace(0, 1, 32), (8, 1))  # a horizontal gray ramp, 8 x 32


def loaders(path):
    """Every way the package reads an image file: (name, RGB array)."""
    return [("analysis", np.asarray(open_image(path))),
            ("eval sample", np.asarray(Sample(id="1", prompt="q", target="yes", image=path).load_image())),
            ("hub bytes", np.asarray(_image_from_bytes(path.read_bytes())))]


@pytest.mark.parametrize("mode, values", [("I;16", (RAMP * 65535).astype(np.uint16)),
                                          ("I", (RAMP * 65535).astype(np.int32)),
                                          ("F", RAMP.astype(np.float32))])
def test_high_bit_depth_grayscale_keeps_its_picture(tmp_path, mode, values):
    path = tmp_path / ("ramp.png" if mode == "I;16" else "ramp.tiff")
    Image.fromarray(values).convert(mode).save(path)
    assert Image.open(path).mode in (mode, "I;16", "I")
    expected = np.round(RAMP * 255)
    for name, rgb in loaders(path):
        assert rgb.shape == (8, 32, 3) and rgb.dtype == np.uint8, name
        assert np.abs(rgb[..., 0] - expected).max() <= 1, name  # not clipped to white above 255
        assert (rgb[..., 0] == rgb[..., 2]).all(), name


def test_transparency_is_white_for_a_users_image_and_dropped_as_the_official_evaluations_do(tmp_path):
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.info["transparency"] = 0  # index 0 (black) is transparent
    la = Image.fromarray(np.stack([np.full((4, 4), 90, np.uint8), np.zeros((4, 4), np.uint8)], -1), mode="LA")
    for name, image in [("palette.png", palette), ("la.png", la)]:
        path = tmp_path / name
        image.save(path, transparency=0) if name == "palette.png" else image.save(path)
        user = np.asarray(open_image(path))
        assert (user[1, 1] == 255).all(), name  # a transparent pixel on white, as a viewer shows it
        with Image.open(path) as opened, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's note on palette transparency
            official = np.asarray(opened.convert("RGB"))
        for loader, rgb in loaders(path)[1:]:
            assert (rgb == official).all(), (name, loader)  # benchmarks: the pixels LLaVA's evaluation reads
    assert tuple(np.asarray(open_image(tmp_path / "palette.png"))[0, 0]) == (200, 30, 30)


@pytest.mark.parametrize("mode", ["CMYK", "L", "1", "YCbCr", "RGBA", "P"])
def test_eight_bit_modes_read_as_pillow_converts_them_for_benchmarks(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8))
    image = rgb.convert(mode)
    path = tmp_path / ("x.jpg" if mode in ("CMYK", "YCbCr") else "x.png")
    image.save(path)
    with Image.open(path) as opened:
        official = np.asarray(opened.convert("RGB"))
    for name, loaded in loaders(path)[1:]:
        assert (loaded == official).all(), name
    if mode != "RGBA":  # opaque: a user's image reads the same
        assert (np.asarray(open_image(path)) == official).all()


def test_exif_orientation_is_applied_to_a_users_photo_not_to_a_benchmark_image(tmp_path):
    image = Image.new("RGB", (20, 10), (10, 200, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone held upright
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif)
    assert open_image(path).size == (10, 20)
    assert Sample(id="1", prompt="q", target="yes", image=path).load_image().size == (20, 10)
    assert load_image(io.BytesIO(path.read_bytes()).getvalue(), photo=False).size == (20, 10)
