"""Why the bundled VLM answers mosaic questions barely above chance: the figures quoted in the README.

    python scripts/mosaic_diagnosis.py [--weights FILE ...]

Needs the frozen training features that ``make train`` caches (runs/train/features-seed0-singles1000-mosaics1000.pt).
1. Is the tile in the features? A linear probe for the quadrant of each token of the 1,000 training mosaics
   (750 mosaics to fit, 250 held out).
2. For each ``--weights`` file: accuracy on questions about training mosaics (what training saw; memorising would
   show here first) and on dev mosaics (training pictures the recipe never shows), balanced over the kinds.
3. ``--tiles``: which tile the model answers about (shape and colour questions on dev mosaics: the answer is
   the named tile's, only another tile's, or no tile's), and how well it reads a picture at tile scale without
   having to find the tile (the same dev picture in all four tiles, against that picture alone).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from tokenfunnel.data import easyvqa
from tokenfunnel.eval.runner import evaluate_samples
from tokenfunnel.eval.scoring import predict
from tokenfunnel.models.bundled import load_bundled
from tokenfunnel.models.train import build_examples, cached_features, dev_image_ids

SIDE = 16  # the bundled VLM's 16x16 patch grid


def quadrant_probe(mosaics: torch.Tensor) -> float:
    """Held-out accuracy of a linear probe reading a token's quadrant (tile) from its frozen feature."""
    index = torch.arange(SIDE * SIDE)
    quadrant = (index // SIDE >= SIDE // 2).long() * 2 + (index % SIDE >= SIDE // 2).long()
    cut = len(mosaics) * 3 // 4
    fit, held = mosaics[:cut].flatten(0, 1), mosaics[cut:].flatten(0, 1)
    y_fit, y_held = quadrant.repeat(cut), quadrant.repeat(len(mosaics) - cut)
    mean, std = fit.mean(0), fit.std(0) + 1e-6
    fit, held = (fit - mean) / std, (held - mean) / std
    chosen = torch.randperm(len(fit))[:40000]
    w = torch.zeros(fit.shape[1], 4, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=100)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(fit[chosen] @ w + b, y_fit[chosen]) + 1e-4 * w.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return ((held @ w + b).argmax(-1) == y_held).float().mean().item()


def training_mosaic_questions(samples: int, seed: int = 1) -> list[easyvqa.Sample]:
    images, pools = build_examples(0, 1000, 1000)
    grids = [i for i, (kind, _) in enumerate(images) if kind == "grid"]
    rng = random.Random(seed)
    out = []
    for n in range(samples):
        i = rng.choice(grids)
        kind = easyvqa.KINDS[n % 3]
        text, answer = rng.choice(pools[i][kind])
        tiles = images[i][1]
        picture = easyvqa.mosaic([easyvqa.load_image("train", t) for t in tiles])
        out.append(easyvqa.Sample(picture, text, answer, kind, tiles, None))
    return out


def answered_tile(model, processor, samples: int) -> dict[str, float]:
    """Shares of shape/colour questions on dev mosaics answered with the named tile's answer, with only another
    tile's answer, or with an answer no tile has."""
    table = easyvqa._questions_by_image("train")
    items = [s for s in easyvqa.grid_set(samples, 0, split="train", image_ids=dev_image_ids()) if s.kind != "yes/no"]
    counts = {"named": 0, "other only": 0, "no tile": 0}
    for start in range(0, len(items), 8):
        chunk = items[start : start + 8]
        guesses = predict(model, processor, [s.image for s in chunk], [s.question for s in chunk], easyvqa.answers())
        for sample, guess in zip(chunk, guesses, strict=True):
            holders = {t for t, i in enumerate(sample.image_ids) if guess in {q.answer for q in table[i][sample.kind]}}
            named = easyvqa.TILES.index(sample.tile)
            key = "named" if named in holders else "other only" if holders else "no tile"
            counts[key] += 1
    return {"questions": len(items), **{k: round(v / len(items), 3) for k, v in counts.items()}}


def tile_scale_reading(model, processor, samples: int) -> dict[str, dict[str, float]]:
    """Accuracy by kind on dev pictures shown alone and shown in all four tiles of a mosaic (no tile to find)."""
    singles = easyvqa.single_set(samples, 0, split="train", image_ids=dev_image_ids())
    hits: dict[str, dict[str, list[bool]]] = {"alone": {}, "four tiles": {}}
    for start in range(0, len(singles), 8):
        chunk = singles[start : start + 8]
        tiled = [easyvqa.tile_question(easyvqa.TILES[(start + i) % 4], s.question) for i, s in enumerate(chunk)]
        views = {
            "alone": predict(
                model, processor, [s.image for s in chunk], [s.question for s in chunk], easyvqa.answers()
            ),
            "four tiles": predict(
                model, processor, [easyvqa.mosaic([s.image] * 4) for s in chunk], tiled, easyvqa.answers()
            ),
        }
        for view, guesses in views.items():
            for sample, guess in zip(chunk, guesses, strict=True):
                hits[view].setdefault(sample.kind, []).append(guess == sample.answer)
    return {view: {k: round(sum(v) / len(v), 3) for k, v in sorted(kinds.items())} for view, kinds in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, nargs="*", default=[])
    parser.add_argument("--train-samples", type=int, default=60)
    parser.add_argument("--dev-samples", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiles", action="store_true", help="only the tile measures (3.), on each --weights")
    parser.add_argument("--tile-samples", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.tiles:
        for weights in args.weights:
            model, processor = load_bundled(weights=weights, quiet=True)
            row = {
                "weights": str(weights),
                "answered_tile": answered_tile(model, processor, args.tile_samples),
                "tile_scale": tile_scale_reading(model, processor, args.tile_samples * 3 // 5),
            }
            print(json.dumps(row), flush=True)
        return
    mosaics = cached_features()[1000:].float()
    accuracy = quadrant_probe(mosaics)
    print(f"quadrant probe on the tokens of {len(mosaics) // 4} held-out training mosaics: {accuracy:.3f}")
    sets = {
        "train-grid": training_mosaic_questions(args.train_samples),
        "dev-grid": easyvqa.grid_set(args.dev_samples, 0, split="train", image_ids=dev_image_ids()),
    }
    for weights in args.weights:
        model, processor = load_bundled(weights=weights, quiet=True)
        for name, items in sets.items():
            row = evaluate_samples(model, processor, items, name)
            print(json.dumps({"weights": str(weights), **row}), flush=True)


if __name__ == "__main__":
    main()
