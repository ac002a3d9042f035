"""Attention-free token scores from the spectrum of the token sequence (Spectrum Pruning Unit).

A token that the low frequencies of its neighbourhood explain well is redundant; what the low-pass filter cannot
reproduce (edges, small objects, outliers) is what a pruner should keep.
"""

from __future__ import annotations

import torch
from torch import Tensor

AXES = ("token", "channel")
_TOL = 1e-12  # so a cutoff that lands exactly on a frequency bin keeps it despite rounding


def _check(x: Tensor, cutoff: float, grid: tuple[int, int] | None, axis: str) -> None:
    if x.dim() != 3:
        raise ValueError(f"expected tokens of shape (B, N, C), got {tuple(x.shape)}; flatten the grid to (B, N, C)")
    if not 0 < cutoff <= 1:
        raise ValueError(f"cutoff must be in (0, 1] (fraction of Nyquist), got {cutoff}; pass e.g. cutoff=0.5")
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}; pass axis='token' or axis='channel'")
    if grid is not None:
        h, w = grid
        if h < 1 or w < 1 or h * w != x.shape[1]:
            raise ValueError(f"grid {tuple(grid)} does not hold {x.shape[1]} tokens; pass grid=(H, W) with H*W == N")


def _keep(freqs: Tensor, cutoff: float) -> Tensor:
    return freqs.abs() <= cutoff * 0.5 + _TOL


def lowpass(x: Tensor, cutoff: float, grid: tuple[int, int] | None = None, axis: str = "token") -> Tensor:
    """Zero every frequency above ``cutoff`` x Nyquist and transform back; same shape and dtype as ``x`` (B, N, C).

    With ``grid=(H, W)`` the token axis is filtered as a 2D image (a frequency survives only if it passes on both
    axes); without it, as a 1D sequence. ``axis="channel"`` filters along C instead (``grid`` is then unused).
    """
    _check(x, cutoff, grid, axis)
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()  # FFTs want full precision
    kw = {"device": x.device, "dtype": torch.float64}
    if axis == "channel" or grid is None:
        dim = 2 if axis == "channel" else 1
        n = work.shape[dim]
        keep = _keep(torch.fft.rfftfreq(n, **kw), cutoff)
        shape = [1, 1, 1]
        shape[dim] = keep.numel()
        out = torch.fft.irfft(torch.fft.rfft(work, dim=dim) * keep.view(shape), n=n, dim=dim)
    else:
        h, w = grid
        img = work.reshape(work.shape[0], h, w, work.shape[2])
        keep = _keep(torch.fft.fftfreq(h, **kw), cutoff)[:, None] & _keep(torch.fft.rfftfreq(w, **kw), cutoff)
        spec = torch.fft.rfft2(img, dim=(1, 2)) * keep[None, :, :, None]
        out = torch.fft.irfft2(spec, s=(h, w), dim=(1, 2)).reshape(work.shape)
    return out.to(x.dtype)


def highfreq_score(
    x: Tensor, cutoff: float, grid: tuple[int, int] | None = None, axis: str = "token", eps: float = 1e-6
) -> Tensor:
    """High-frequency energy share of each token, (B, N): ||x_i - lowpass(x)_i||^2 / (||x_i||^2 + eps).

    Near 0 where the smooth part explains the token, large where it does not; ``eps`` keeps zero tokens finite.
    """
    low = lowpass(x, cutoff, grid, axis)
    return (x - low).pow(2).sum(-1) / (x.pow(2).sum(-1) + eps)
