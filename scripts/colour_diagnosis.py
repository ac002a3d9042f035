"""Why the bundled VLM v1 answered colour at chance: the figures quoted in the README's training section.

    python scripts/colour_diagnosis.py [--weights FILE ...]

Needs the frozen training features that ``make train`` caches (runs/train/features-seed0-singles1000-mosaics1000.pt).
1. Conditioning of the features: the top eigenvalues of their token covariance, their share, the median.
2. A linear colour probe (8 classes, 70/30 split of the single training pictures that have a colour answer) on
   the mean-pooled features and on the 8 tokens farthest from the picture's mean token.
3. For each ``--weights`` file: colour and shape answers to one fixed question on 40 dev pictures (training
   pictures the recipe never shows), and the answers given most often.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch

from tokenfunnel.data import easyvqa
from tokenfunnel.eval.scoring import predict
from tokenfunnel.models.bundled import load_bundled
from tokenfunnel.models.train import build_examples, cached_features, dev_image_ids


def probe(x: torch.Tensor, y: torch.Tensor) -> float:
    cut = int(len(x) * 0.7)
    x = (x - x[:cut].mean(0)) / (x[:cut].std(0) + 1e-6)
    w = torch.zeros(x.shape[1], 8, requires_grad=True)
    b = torch.zeros(8, requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(500):
        loss = torch.nn.functional.cross_entropy(x[:cut] @ w + b, y[:cut]) + 1e-3 * w.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return ((x[cut:] @ w + b).argmax(-1) == y[cut:]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, nargs="*", default=[])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    features = cached_features()
    tokens = features[:200].float().flatten(0, 1)
    values = torch.linalg.eigvalsh(torch.cov(tokens.T))
    print(
        f"eigenvalues: top 5 {[round(v, 1) for v in values[-5:].tolist()]}, median {values.median().item():.4f}, "
        f"top-5 share {(values[-5:].sum() / values.sum()).item():.2f}"
    )
    images, _ = build_examples(0, 1000, 1000)
    looks = easyvqa.looks_of("train")
    singles = [i for i, (kind, ids) in enumerate(images) if kind == "single" and ids[0] in looks]
    y = torch.tensor([easyvqa.COLORS.index(looks[images[i][1][0]][1]) for i in singles])
    f = features[singles].float()
    far = (f - f.mean(1, keepdim=True)).norm(dim=-1).topk(8, dim=1).indices
    print(
        f"colour probe on {len(singles)} singles: mean-pooled {probe(f.mean(1), y):.3f}, "
        f"8 farthest tokens {probe(torch.gather(f, 1, far[..., None].expand(-1, -1, f.shape[-1])).mean(1), y):.3f}"
    )
    dev = [i for i in dev_image_ids() if i in looks][:40]
    pictures = [easyvqa.load_image("train", i) for i in dev]
    for weights in args.weights:
        model, processor = load_bundled(weights=weights, quiet=True)
        for question, part in (("What color is the shape?", 1), ("What shape is in the image?", 0)):
            with torch.no_grad():
                guesses = predict(model, processor, pictures, [question] * len(dev), easyvqa.answers())
            right = sum(g == looks[i][part] for g, i in zip(guesses, dev, strict=True)) / len(dev)
            print(
                f"{weights}: {question!r} on {len(dev)} dev pictures: {right:.3f}, "
                f"most given {collections.Counter(guesses).most_common(3)}"
            )


if __name__ == "__main__":
    main()
