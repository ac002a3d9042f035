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
    """One panel per stage: the tokens leaving the encoder, then those entering chosen decoder layers. Patches whose
    token is gone are dark; patches folded into a token that is not a whole box (a contextual or ToMe group) are
    tinted, since that token only summarises them; with frozen context, patches whose token the layer still attends
    as keys and values only (``report()["context"]``) are tinted amber."""
    boxes = np.array(report["boxes"][image_index]).reshape(-1, 4)
    owner = np.array(report["patch_owner"][image_index]).reshape(report["patch_grid"])
    offset = sum(a * b for a, b in report["grids"][:image_index])
    count = len(boxes)
    held = np.bincount(owner[owner >= 0], minlength=count)
    summary = held < (boxes[:, 1] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 2] + 1)
    layers = default_layers(len(report["llm_visual_tokens"])) if layers is None else layers
    fig, axes = plt.subplots(1, 1 + len(layers), figsize=(3.2 * (1 + len(layers)), 3.6))
    panel = _Panel(image, boxes, owner, summary)
    panel.draw(axes[0], np.ones(count, bool), "after the encoder")
    context = report.get("context")
    for ax, layer in zip(axes[1:], layers, strict=True):
        alive = _marked(report["kept"][layer][0], offset, count)
        frozen = None if context is None else _marked(context[layer][0], offset, count)
        panel.draw(ax, alive, f"LLM layer {layer}", frozen)
    fig.suptitle(
        f"keep {report['keep']:.3f} (FLOP-equivalent); encoder_keep {report.get('encoder_keep', 1.0):.3f}; "
        "dark: dropped, tinted: folded into a summary token" + ("; amber: frozen context" if context else "")
    )
    fig.tight_layout()
    return fig


def _marked(cells: list[int], offset: int, count: int) -> np.ndarray:
    """(count,) bool: the tokens of one image (its cells start at ``offset``) that ``cells`` lists."""
    idx = np.asarray(cells, dtype=int) - offset
    out = np.zeros(count, bool)
    out[idx[(idx >= 0) & (idx < count)]] = True
    return out


class _Panel:
    def __init__(self, image: np.ndarray, boxes: np.ndarray, owner: np.ndarray, summary: np.ndarray) -> None:
        self.image, self.boxes, self.owner, self.summary = image, boxes, owner, summary
        gh, gw = owner.shape
        self.ph, self.pw = image.shape[0] / gh, image.shape[1] / gw

    def draw(self, ax, alive: np.ndarray, where: str, frozen: np.ndarray | None = None) -> None:
        h, w = self.image.shape[:2]
        ax.imshow(self.image)
        inside, owner = self.owner >= 0, self.owner.clip(min=0)  # per patch: held by a token, and which
        live = inside & alive[owner]
        folded = live & self.summary[owner]
        shade = np.zeros(self.owner.shape + (4,))
        shade[~live] = (0, 0, 0, 0.75)
        shade[folded] = (0.1, 0.3, 1.0, 0.45)
        if frozen is not None:
            shade[inside & frozen[owner] & ~live] = (1.0, 0.6, 0.0, 0.5)
        ax.imshow(shade, extent=(0, w, h, 0), interpolation="nearest")
        for (r0, r1, c0, c1), on, part in zip(self.boxes, alive, self.summary, strict=True):
            if on and not part:
                y0, x0 = r0 * self.ph, c0 * self.pw
                size = ((c1 + 1 - c0) * self.pw, (r1 + 1 - r0) * self.ph)
                ax.add_patch(Rectangle((x0, y0), *size, fill=False, lw=0.4, ec="white", alpha=0.6))
        whole, parts = int((alive & ~self.summary).sum()), int((alive & self.summary).sum())
        title = f"{where}: {whole + parts} tokens" + (f" ({parts} summaries)" if parts else "")
        if frozen is not None and frozen.any():
            title += f" + {int(frozen.sum())} frozen"
        ax.set_title(title, fontsize=9)
        ax.axis("off")
