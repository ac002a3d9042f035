"""Diagnostic: can a linear probe read the shape's colour from the vision features and from the projector output?

    python scripts/colour_probe.py

500 dev-split images (training images the training recipe never shows): 400 fit the probe, 100 score it.
Pooled features (mean, max, min over the 256 patch tokens), standardised, multinomial logistic regression.
"""

import torch
import torch.nn.functional as F

from tokenfunnel.data import easyvqa
from tokenfunnel.models.bundled import load_bundled
from tokenfunnel.models.train import dev_image_ids, image_features


def probe(x: torch.Tensor, labels: torch.Tensor, fit: int = 400) -> float:
    z = torch.cat([x.mean(1), x.max(1).values, x.min(1).values], -1)
    z = (z - z[:fit].mean(0)) / (z[:fit].std(0) + 1e-6)
    w = torch.zeros(z.shape[1], len(easyvqa.COLORS), requires_grad=True)
    b = torch.zeros(len(easyvqa.COLORS), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(300):
        loss = F.cross_entropy(z[:fit] @ w + b, labels[:fit]) + 1e-3 * w.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ((z[fit:] @ w + b).argmax(-1) == labels[fit:]).float().mean().item()


def main() -> None:
    torch.manual_seed(0)
    model, processor = load_bundled(quiet=True)
    table = easyvqa._questions_by_image("train")
    ids = [i for i in dev_image_ids() if table[i]["color"]][:500]
    labels = torch.tensor([easyvqa.COLORS.index(table[i]["color"][0].answer) for i in ids])
    features = image_features(model, processor, [easyvqa.load_image("train", i) for i in ids], batch=50).float()
    with torch.no_grad():
        projected = model.model.multi_modal_projector(features)
    print(f"DINOv2 last layer (pre-norm), held-out colour accuracy: {probe(features, labels):.3f}")
    print(f"projector output (LM input), held-out colour accuracy: {probe(projected, labels):.3f}")


if __name__ == "__main__":
    main()
