"""Draw the regions of an image that survive each stage of a compressed forward, from ``handle.report()``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import numpy as np  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def picture(pixel_values, mean, std) -> np.ndarray:
    """The (H, W, 3) picture the model saw, from one normalised (3, H, W) pixel tensor."""
    img = pixel_values.detach().float().cpu().numpy().transpose(1, 2, 0) * np.array(std) + np.array(mean)
    return np.clip(img, 0, 1)


def default_layers(n_layers: int) -> list[int]:
    """A few decoder layers worth showing: the start, the quarters, and the one before last."""
    return sorted({0, n_layers // 4, n_layers // 2, 3 * n_layers // 4, max(0, n_layers - 2)})


def kept_figure(image: np.ndarray, report: dict, layers: list[int] | None = None, image_index: int = 0):
    """One panel per stage: the encoder's merged grid, then the tokens entering chosen decoder layers."""
    gh, gw = report["patch_grid"]
    h, w = image.shape[:2]
    ph, pw = h / gh, w / gw
    boxes = np.array(report["boxes"][image_index])
    offset = sum(a * b for a, b in report["grids"][:image_index])
    count = len(boxes)
    layers = default_layers(len(report["llm_visual_tokens"])) if layers is None else layers
    fig, axes = plt.subplots(1, 1 + len(layers), figsize=(3.2 * (1 + len(layers)), 3.6))
    gr, gc = report["grids"][image_index]
    _panel(axes[0], image, boxes, np.ones(count, bool), ph, pw, f"after encoder: {gr}x{gc} = {count} tokens")
    for ax, layer in zip(axes[1:], layers, strict=True):
        kept = np.asarray(report["kept"][layer][0]) - offset
        alive = np.zeros(count, bool)
        alive[kept[(kept >= 0) & (kept < count)]] = True
        _panel(ax, image, boxes, alive, ph, pw, f"LLM layer {layer}: {int(alive.sum())} tokens")
    fig.suptitle(f"keep {report['keep']:.3f} (FLOP-equivalent); encoder_keep {report.get('encoder_keep', 1.0):.3f}")
    fig.tight_layout()
    return fig


def _panel(ax, image, boxes, alive, ph: float, pw: float, title: str) -> None:
    ax.imshow(image)
    shade = np.zeros(image.shape[:2] + (4,))
    for (r0, r1, c0, c1), on in zip(boxes, alive, strict=True):
        y0, y1, x0, x1 = int(r0 * ph), int((r1 + 1) * ph), int(c0 * pw), int((c1 + 1) * pw)
        if not on:
            shade[y0:y1, x0:x1] = (0, 0, 0, 0.75)
        else:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.4, ec="white", alpha=0.6))
    ax.imshow(shade)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
