"""What families with a pixel-shuffle connector (Idefics3/SmolVLM, InternVL) share: s x s neighbouring encoder
tokens are stacked into one language-model token, so an h x w patch grid fills a run of (h/s) * (w/s) placeholders.

OIM must leave a grid whose sides stay multiples of s. The plan's schedule is therefore asked for the (h/s) x (w/s)
block grid and replayed on the patch grid with s times as many pairs per step: a step of r pairs on a block grid
n wide is possible when r <= n // 2, so s * r pairs fit in the s * n wide patch grid, and the grid that leaves the
encoder is s times the block grid the plan chose. Only whole columns/rows merge, so the connector's s x s blocks
of the merged grid still cover rectangles of original patches.
"""

from __future__ import annotations

from torch import Tensor


def scaled_steps(plan, h: int, w: int, layers: int, s: int) -> dict[int, tuple[str, int]]:
    """The plan's OIM steps for the h x w patch grid, keeping both sides multiples of the shuffle factor ``s``."""
    if h % s or w % s:
        raise ValueError(f"a {h}x{w} patch grid cannot be pixel-shuffled by {s}; resize images to a multiple of {s}")
    return {i: (axis, r * s) for i, (axis, r) in plan.encoder_steps(h // s, w // s, layers).items()}


def shuffle(x: Tensor, h: int, w: int, s: int) -> Tensor:
    """Idefics3's ``pixel_shuffle`` for an h x w grid that need not be square: (I, h*w, D) -> (I, h*w/s^2, D*s^2)."""
    b, n, d = x.shape
    x = x.view(b, h, w // s, d * s).permute(0, 2, 1, 3)
    x = x.reshape(b, w // s, h // s, d * s * s).permute(0, 2, 1, 3)
    return x.reshape(b, n // (s * s), d * s * s)
