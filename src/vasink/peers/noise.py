"""VCD's noised image: forward diffusion of the processor's pixel tensor (DAMO-NLP-SG/VCD, vcd_add_noise.py).

    betas = sigmoid(linspace(-6, 6, 1000)) * (0.5e-2 - 1e-5) + 1e-5
    abar  = cumprod(1 - betas)
    x_t   = sqrt(abar[t]) * x + sqrt(1 - abar[t]) * eps,   eps ~ N(0, 1)

applied, as officially, to the already normalized pixel values the processor returns (for t = 500:
x_t = 0.8630 x + 0.5052 eps).
"""

from __future__ import annotations

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
