"""How detail's global view is made, decided on the dev split of single images (unseen easy-VQA training images):
the image downsampled to the global grid and re-encoded (view "image", FastVLM's low-resolution view) against the
full view's tokens averaged over each block (view "pool"), without and with details, beside LUVC at the keep
detail realises without details.

    python scripts/detail_views.py --samples 150 --out benchmarks/detail_views.jsonl   (~11 min on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import tokenfunnel
from tokenfunnel.data import easyvqa
from tokenfunnel.eval.runner import evaluate_samples
from tokenfunnel.models.bundled import load_bundled

KEEP = 0.25
SETTINGS = [
    ("none", {}),
    *[("detail", dict(keep=KEEP, details=d, view=v)) for d in ("never", "always") for v in ("image", "pool")],
    ("luvc", dict(keep=0.141)),  # detail's realised keep without details (6x6 of 16x16)
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--dataset", default="easyvqa-dev")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_bundled()
    items = easyvqa.load_set(args.dataset, args.samples, 0)
    lines = []
    for method, options in SETTINGS:
        if method == "none":
            row = evaluate_samples(model, processor, items, args.dataset)
        else:
            with tokenfunnel.compress(model, method, **options) as handle:
                row = evaluate_samples(model, processor, items, args.dataset, handle=handle)
        line = {"method": method, **options, "dataset": args.dataset, "samples": len(items)}
        line.update(accuracy=row["accuracy"], by_kind=row["accuracy_by_kind"], realised_keep=row.get("realised_keep"))
        print(json.dumps(line), flush=True)
        lines.append(json.dumps(line))
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
