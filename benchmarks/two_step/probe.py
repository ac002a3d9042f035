"""Probe, not in the library: `luvc-focus`'s hold with a first, wider drop before decoder layer 0.

    TF_COUNTS=128x8,41x22 python benchmarks/two_step/probe.py --samples 800 --keep 0.25 \
        --variants "current defaults" --baselines luvc:focus=true,stage=llm,start=5 --out F

The shipped hold carries all 256 tokens of a mosaic through 5 layers, then 26-25 of the named tile's. Here the LM-stage
drops follow TF_COUNTS instead (COUNTxLAYERS,...; they must cover every decoder layer): e.g. 128 tokens (the named
tile's 64 and the 64 best-scoring of the rest) through 8 layers, then 41 of the tile's. Each drop ranks the named
tile first, as hold does. The counts, not --keep, set the budget: each row records the keep they realise (visual
tokens entering each layer; with benchmarks/frozen_context/patch.diff it leaves out the frozen tokens' cost).
"""

import os
import runpy
import sys
from pathlib import Path

import tokenfunnel.methods.luvc as luvc

_cascade = luvc.cascade


def counts_from_env(*args, **kwargs):
    spec = os.environ.get("TF_COUNTS")
    if not spec:
        return _cascade(*args, **kwargs)
    out = []
    for part in spec.split(","):
        count, layers = part.split("x")
        out += [int(count)] * int(layers)
    if len(out) != args[1]:
        raise SystemExit(f"TF_COUNTS covers {len(out)} layers; the model has {args[1]}")
    return out


luvc.cascade = counts_from_env
sys.argv = ["luvc_ablation.py", *sys.argv[1:]]
runpy.run_path(str(Path(__file__).parents[2] / "scripts" / "luvc_ablation.py"), run_name="__main__")
