"""VCD's noised image: forward diffusion of the processor's pixel tensor (DAMO-NLP-SG/VCD, vcd_add_noise.py).

    betas = sigmoid(linspace(-6, 6, 1000)) * (0.5e-2 - 1e-5) + 1e-5
    abar  = cumprod(1 - betas)
    x_t   = sqrt(abar[t]) * x + sqrt(1 - abar[t]) * eps,   eps ~ N(0, 1)

applied, as officially, to the already normalized pixel values the processor returns (for t = 500:
x_t = 0.8630 x + 0.5052 eps).

With a seed, each image draws its own eps from a generator seeded by (seed, that image's pixels)
(:func:`noised_batch_pixels`): a prompt's noised image is the same alone or in any batch, in any order
(docs/peers.md#vcd-visual-contrastive-decoding-leng-et-al-cvpr-2024-damo-nlp-sgvcd).
"""

from __future__ import annotations

import hashlib
import itertools
import struct

import torch

NUM_STEPS = 1000


def alpha_bar(step: int) -> float:
    """abar[step] of the official sigmoid schedule, computed as the official code does (float32)."""
    betas = torch.sigmoid(torch.linspace(-6, 6, NUM_STEPS)) * (0.5e-2 - 1e-5) + 1e-5
    return float(torch.cumprod(1 - betas, dim=0)[step])


def noised_pixels(pixels: torch.Tensor, step: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``pixels`` diffused to ``step``; eps is drawn in float32 on the CPU (from ``generator`` when given) so a
    seed gives the same noise on every device. Returned in ``pixels``' dtype and device.

    An all-zero image (``pixels`` of 4 or more dims: the last three are one image) is a batch's padding
    (Idefics3 and SmolVLM drop such images by that test): it stays zero."""
    eps = torch.randn(pixels.shape, generator=generator, dtype=torch.float32)
    abar = alpha_bar(step)
    noised = abar ** 0.5 * pixels.float() + (1 - abar) ** 0.5 * eps.to(pixels.device)
    if pixels.dim() >= 4:
        padding = (pixels == 0).flatten(-3).all(-1)  # (...,) one flag per image
        noised = noised.masked_fill(padding[..., None, None, None], 0.0)
    return noised.to(pixels.dtype)


def image_seed(seed: int, images: list[torch.Tensor]) -> int:
    """The generator seed of one image unit: a hash of ``seed`` and the unit's pixels (shapes and float32 values)."""
    digest = hashlib.sha256(struct.pack("<q", seed))
    for image in images:
        digest.update(struct.pack(f"<{image.dim()}q", *image.shape))
        digest.update(image.detach().float().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "little") & ((1 << 63) - 1)


def pixel_units(pixels: torch.Tensor, grid_thw: torch.Tensor | None = None,
                image_sizes: torch.Tensor | None = None) -> list[list[tuple]]:
    """The image units of a batch's pixel tensor, each a list of index tuples (one per sub-image, in order) that
    select its pixels; a unit's pixels do not depend on the rest of the batch:

    - 4 or more dims: one unit per entry of dim 0 (an image, a tile, a row's images, a video); its sub-images are
      the (C, H, W) images under it (LLaVA-NeXT's patches, Idefics3's images, a video's frames). With
      ``image_sizes`` (H, W) per image of a 4-dim tensor (Mistral 3 pads images to the batch's largest), each
      image is cropped to its size.
    - flattened patches (Qwen2-VL: (patches, dim)) with the ``grid_thw`` of their images / videos: one unit per
      image, its t*h*w consecutive patches.
    - otherwise the whole tensor is one unit (its noise then depends on the batch)."""
    if pixels.dim() >= 4:
        inner = list(itertools.product(*[range(n) for n in pixels.shape[1:-3]]))  # [()] for 4 dims
        crops = [(slice(None),) * 3] * pixels.shape[0]
        if image_sizes is not None and pixels.dim() == 4 and tuple(image_sizes.shape) == (pixels.shape[0], 2):
            sizes = image_sizes.tolist()
            if all(0 < h <= pixels.shape[-2] and 0 < w <= pixels.shape[-1] for h, w in sizes):
                crops = [(slice(None), slice(0, int(h)), slice(0, int(w))) for h, w in sizes]
        return [[(i, *index, *crops[i]) for index in inner] for i in range(pixels.shape[0])]
    if grid_thw is not None and pixels.dim() in (2, 3):
        sizes = grid_thw.prod(-1).tolist()
        if sum(sizes) == pixels.shape[0]:
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            return [[(slice(start, start + size),)] for start, size in zip(starts, sizes)]
    return [[(Ellipsis,)]]


def noised_batch_pixels(pixels: torch.Tensor, step: int, seed: int | None, grid_thw: torch.Tensor | None = None,
                        image_sizes: torch.Tensor | None = None) -> torch.Tensor:
    """A batch's pixel tensor diffused to ``step``. With a ``seed``, each unit of :func:`pixel_units` draws its
    eps from a generator seeded by :func:`image_seed` (seed, the unit's pixels), one sub-image after the other
    (all-zero sub-images, a batch's padding, stay zero and draw nothing): a row's noise depends only on the seed
    and its own pixels. Two images with the same pixels get the same noise. ``seed=None``: one draw for the
    whole tensor from torch's global generator, as the official code."""
    if seed is None:
        return noised_pixels(pixels, step)
    out = pixels.clone()
    for unit in pixel_units(pixels, grid_thw, image_sizes):
        images = [(index, pixels[index]) for index in unit]
        if pixels.dim() >= 4:
            images = [(index, image) for index, image in images if bool((image != 0).any())]
        generator = torch.Generator().manual_seed(image_seed(seed, [image for _, image in images]))
        for index, image in images:
            out[index] = noised_pixels(image, step, generator)
    return out
