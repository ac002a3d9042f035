"""How deep the bundled VLM reads the picture: every visual token enters the first k decoder layers, none after.

    python scripts/luvc_reading_depth.py --samples 180 --out benchmarks/luvc_reading_depth.json

If the text had taken what it needs from the picture by layer k, the answers would survive the cut. On dev mosaics
(easy-VQA training images) they do not until k is close to the last layer, which is why an empty last layer
(LUVC's ``final_zero``) and any cascade that falls to zero cost accuracy on this model. Each row: the cut layer, the
realised keep (k / layers), accuracy and agreement with the uncompressed answers on the same questions.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from luvc_ablation import _mean, answers

import tokenfunnel
from tokenfunnel.bench.models import fingerprint
from tokenfunnel.data import easyvqa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=180)
    parser.add_argument("--dataset", choices=("easyvqa-grid-dev", "easyvqa-dev"), default="easyvqa-grid-dev")
    parser.add_argument("--cuts", type=int, nargs="+", default=[4, 8, 12, 16, 22, 26, 29])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/luvc_reading_depth.json"))
    args = parser.parse_args()
    model, processor = tokenfunnel.load_bundled(quiet=True)
    layers = model.config.text_config.num_hidden_layers
    items = easyvqa.load_set(args.dataset, args.samples, 0)
    truth = [s.answer for s in items]
    started = time.perf_counter()
    with torch.no_grad():
        reference = answers(model, processor, items, args.batch)
    rows = [{"cut": layers, "keep": 1.0, "accuracy": _mean(map(str.__eq__, reference, truth)), "agreement": 1.0}]
    rows[0]["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(rows[0]), flush=True)
    for cut in args.cuts:
        if not 0 < cut < layers:
            parser.error(f"--cuts must be decoder layers in 1..{layers - 1}, got {cut}")
        started = time.perf_counter()
        # a flat LUVC schedule that starts at the cut with a mean of exactly `cut` layers of tokens keeps none
        # after it; the margin (far below one token) only absorbs floating-point rounding of keep * layers
        keep = cut / layers + 1e-9
        with torch.no_grad(), tokenfunnel.compress(model, "luvc", keep=keep, start=cut, stage="llm") as handle:
            got = answers(model, processor, items, args.batch)
            counts = handle.report()["llm_visual_tokens"]
        if any(counts[cut:]):
            raise RuntimeError(f"visual tokens survived the cut at layer {cut}: {counts}; this is a bug")
        row = {
            "cut": cut,
            "keep": round(cut / layers, 4),
            "accuracy": _mean(map(str.__eq__, got, truth)),
            "agreement": _mean(map(str.__eq__, got, reference)),
            "seconds": round(time.perf_counter() - started, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    what = {"dataset": args.dataset, "samples": args.samples, "weights": fingerprint("bundled")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**what, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
