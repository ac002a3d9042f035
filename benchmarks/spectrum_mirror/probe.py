"""Probe, not in the library: LUVC's 2-D spectral score with mirrored edges instead of wrapped ones.

    python benchmarks/spectrum_mirror/probe.py --samples 800 --keep 0.25 --variants "current defaults" \
        --baselines luvc:focus=true,stage=llm,start=5,spectrum=2d --out F

The FFT treats each image's grid as periodic, so the last column neighbours the first and the last row the first:
a picture's border tokens score high for the jump across it. The 1-D score has the same jump at every row's end;
in the kept sets of a few questions `luvc-focus` lost on dev, the grid's edge column was kept in most rows.
Mirroring the grid to 2H x 2W before the transform (what a DCT does) removes those jumps. Every argument goes to
scripts/luvc_ablation.py, whose 2-D rows then run with the mirrored low-pass. On 800 dev mosaics it scored 0.8725,
against 0.884 wrapped and 0.8925 for the shipped 1-D score (dev800.json here, and
benchmarks/luvc_focus_hold/dev800_schedules.json).
"""

import runpy
import sys
from pathlib import Path

import torch

import tokenfunnel.ops.spectrum as spectrum

_wrapped = spectrum.lowpass


def mirrored(x, cutoff, grid=None, axis="token"):
    if grid is None or axis == "channel":
        return _wrapped(x, cutoff, grid, axis)
    h, w = grid
    b, n, c = x.shape
    img = x.float().reshape(b, h, w, c)
    img = torch.cat([img, img.flip(1)], 1)
    img = torch.cat([img, img.flip(2)], 2)
    out = _wrapped(img.reshape(b, 4 * n, c), cutoff, (2 * h, 2 * w), axis).reshape(b, 2 * h, 2 * w, c)
    return out[:, :h, :w].reshape(b, n, c).to(x.dtype)


spectrum.lowpass = mirrored
sys.argv = ["luvc_ablation.py", *sys.argv[1:]]
runpy.run_path(str(Path(__file__).parents[2] / "scripts" / "luvc_ablation.py"), run_name="__main__")
