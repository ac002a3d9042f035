"""Choose PVC's similarity thresholds on the dev clips (easy-VQA training images the bundled VLM never saw).

    python scripts/pvc_thresholds.py --samples 60 --out benchmarks/pvc_thresholds.json

Runs only the vision side (encoder with PVC's per-frame OIM, then the projector) and records, for every frame
after the first, its mean token cosine with the running merged frame, split by whether the frame shows the same
picture as the one before it (jitter and noise only) or a new one (a cut). A frame threshold belongs between
the two; for the token-level stage it records per-token cosines against the previous frame the same way. Prints
the quantiles and how many cuts / repeats each candidate threshold would get wrong.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import tokenfunnel
from tokenfunnel.bench.data import load_items
from tokenfunnel.ops.temporal import merge_frames

CANDIDATES = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
QUANTILES = (0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0)


def _quantiles(values: list[float]) -> dict[str, float]:
    t = torch.tensor(values)
    return {f"q{q:g}": round(float(t.quantile(q)), 4) for q in QUANTILES}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spatial", type=float, default=0.5, help="PVC's per-frame OIM fraction (1.0: none)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/pvc_thresholds.json"))
    args = parser.parse_args()
    model, processor = tokenfunnel.load_bundled()
    items = load_items("easyvqa-clips-dev", args.samples, args.seed)
    repeat, cut, token_repeat, token_cut = [], [], [], []
    with tokenfunnel.compress(model, "pvc", spatial=args.spatial):
        for item in items:
            pixels = processor([item.frames], [item.question])["pixel_values"]
            feats = torch.stack(list(model.model.get_image_features(pixel_values=pixels).pooler_output))
            inserted = set(item.meta["inserted_frames"])
            changed = [t for t in range(1, len(item.frames)) if (t in inserted) != (t - 1 in inserted)]
            fm = merge_frames(feats, 1.0)  # threshold 1: every frame its own, similarity to the previous frame
            for t in range(1, len(feats)):
                cos = torch.nn.functional.cosine_similarity(feats[t].float(), feats[t - 1].float(), dim=-1)
                (cut if t in changed else repeat).append(fm.similarity[t])
                (token_cut if t in changed else token_repeat).extend(cos.tolist())
    result = {
        "command": "python scripts/pvc_thresholds.py "
        + f"--samples {args.samples} --seed {args.seed} --spatial {args.spatial:g} --out {args.out}",
        "spatial": args.spatial,
        "frames": {"repeat": _quantiles(repeat), "cut": _quantiles(cut), "count": [len(repeat), len(cut)]},
        "tokens": {"repeat": _quantiles(token_repeat), "cut": _quantiles(token_cut)},
        "errors": {
            f"{c:g}": {
                "cuts_folded": sum(s > c for s in cut) / len(cut),
                "repeats_kept": sum(s <= c for s in repeat) / len(repeat),
                "tokens_of_cuts_dropped": sum(s > c for s in token_cut) / len(token_cut),
                "tokens_of_repeats_kept": sum(s <= c for s in token_repeat) / len(token_repeat),
            }
            for c in CANDIDATES
        },
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
