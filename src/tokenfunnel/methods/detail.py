"""Global + detail views (training-free, after FastVLM's low-res global / high-res detail split): the language model
gets the tokens of a low-resolution view of each image, and only those full-resolution tokens that add what the
global view lacks, and none at all when the question does not need details.

Between the projector and the language model (LLaVA family), the global view is a coarser grid of tokens: by default
one real token per block of cells, the one least alike its image's mean token (``view="salient"``); or the block's
tokens averaged (``view="pool"``); or, with ``view="image"``, the runtime encodes each image a second time with the
same tower and projector, downsampled to the coarser grid (bilinear, antialiased, positions interpolated, as the
``downsample`` method does), and encoder_tokens counts both passes. On the bundled VLM's dev split without details the
re-encoded small image loses most of the colour (keep 0.25: 0.63 against 0.79 pooled; scripts/detail_views.py) and
averaging loses some of it too (0.794 pooled against 0.867 salient), hence the default. Each global token covers a
block of full-resolution cells; a cell's novelty is 1 - cosine between its own (detail) token and its block's global
token. When the question needs details (``ops.detail.requires_details``: spatial or text words, a long question, a
busy image), the most novel detail tokens fill the budget beside the global tokens (those of the part of the
picture the question names first, when it names one: ``ops.detail.named_parts``); a global token whose block is kept
whole as detail is dropped and its slot goes to one more detail token. Each token takes the placeholder (so the
position) of a cell: a detail token its own, a global token the free cell nearest its block's centre.

Tiling families (Idefics3/SmolVLM, InternVL) already show the model a picture as tiles plus a thumbnail of the whole:
there the thumbnail is the global view (reduced to a coarser grid by ``view`` only when the budget is smaller) and the
tiles are the detail (``tiles="thumbnail"``, the default); since the model is not told where a tile lies, a tile
token's novelty is 1 - its best cosine with any global token.

``keep`` is the budget with details (global tokens included); without details only the global tokens enter, so the
realised keep is lower, except at keep 1.0, which is the unmodified model whatever the question (``handle.report()``
gives it, and per sample whether details were used and why). The default global grid scales each side by
sqrt(global_share x keep): half the budget is global (8x8 of 16x16 at keep 0.5, 6x6 at 0.25, 4x4 at 0.11).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from tokenfunnel.methods.common import SelectStage, can_decode, check_keep, focus_label, question_text
from tokenfunnel.methods.difficulty import IMAGENET_MEAN, IMAGENET_STD
from tokenfunnel.ops.detail import (
    SPATIAL,
    blocks,
    detail_reasons,
    named_parts,
    novelty,
    part_cells,
    pick_details,
    salient,
    stand_ins,
    unseen,
)
from tokenfunnel.ops.relevance import region_means
from tokenfunnel.runtime.state import Selection, Visuals

DETAILS = ("auto", "always", "never")
VIEWS = ("image", "pool", "salient")
TILES = ("thumbnail", "images")


@dataclass(frozen=True)
class DetailConfig:
    """Options of detail.

    keep: visual tokens entering the language model with details, global ones included, as a fraction of the input;
        1.0 is the unmodified model, details or not.
    details: "auto" asks ``requires_details`` per sample; "always" or "never" force the detail path on or off.
    tokenizer: the processor's tokenizer (``processor.tokenizer``), to read the question; required for "auto".
    global_share: share of the budget the default global grid takes (each side scaled by sqrt(share x keep)).
    global_grid: (rows, cols) of the global view instead of the default; at most the patch grid.
    view: how the global view is made: "pool" averages the full-resolution tokens over each block (one encoder
        pass); "image" encodes the image downsampled to the global grid (a second, smaller encoder pass, FastVLM's
        low-resolution view); "salient" keeps one real token per block, the one least alike its image's mean token
        (one encoder pass; a block mean blurs a small shape into the background, a picked token does not).
        "salient" is the default by measurement on the bundled VLM's dev split without details (180 questions):
        0.867 / 0.833 against "pool"'s 0.794 / 0.722 at keep 0.25 / 0.11 (colour 0.85 against 0.68 at 0.25);
        "pool" beat "image" there, 0.79 against 0.63 without details and 0.89 against 0.71 with them, at keep 0.25
        (scripts/detail_views.py).
    tiles: how a tiling family's sample of several images is read (Idefics3/SmolVLM, InternVL; LLaVA's images are
        always pictures of their own). "thumbnail": the tiles of one picture and, last, its thumbnail, which is the
        global view (reduced to the global grid when the budget is smaller), and detail tokens come from the tiles;
        "images": every image a picture with its own pooled global view (for prompts that hold several pictures).
    focus: where the question names a part of the picture (a corner, "top-left"; a half, "left half"), the detail
        tokens come from that part first, the most novel of it, and from the rest only once it is all kept; the
        global view still covers the whole. On a tiling family's tiles, whose places the model is not told, it is
        not applied (``report()["stage"]["focus"]`` says so per sample).
    words, max_words, edge_threshold, busy: the policy's spatial words, question length in words above which details
        are needed, Sobel threshold of an edge pixel, and edge density above which details are needed.
    image_mean, image_std: the processor's normalisation, undone to read the pixels (ImageNet's, the bundled VLM's).
    """

    keep: float = 0.25
    details: str = "auto"
    tokenizer: object = field(default=None, repr=False, compare=False)
    global_share: float = 0.5
    global_grid: tuple[int, int] | None = None
    view: str = "salient"
    tiles: str = "thumbnail"
    focus: bool = True
    words: tuple[str, ...] = SPATIAL
    max_words: int = 15
    edge_threshold: float = 0.2
    busy: float = 0.12
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if self.details not in DETAILS:
            raise ValueError(f"details must be one of {DETAILS}, got {self.details!r}")
        if self.details == "auto" and not can_decode(self.tokenizer):
            raise ValueError(
                "detail reads the question as text to decide on details: pass the processor's tokenizer, "
                "compress(model, 'detail', tokenizer=processor.tokenizer), or force details='always' or 'never'"
            )
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {self.view!r}")
        if self.tiles not in TILES:
            raise ValueError(f"tiles must be one of {TILES}, got {self.tiles!r}")
        if not 0 < self.global_share <= 1:
            raise ValueError(f"global_share must be in (0, 1], got {self.global_share}")
        if self.global_grid is not None:
            if len(self.global_grid) != 2 or min(self.global_grid) < 1:
                raise ValueError(f"global_grid is (rows, cols), both >= 1, got {self.global_grid}")
            object.__setattr__(self, "global_grid", (int(self.global_grid[0]), int(self.global_grid[1])))
        object.__setattr__(self, "words", tuple(w.lower() for w in self.words))
        if self.max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {self.max_words}")
        if not 0 <= self.busy <= 1 or self.edge_threshold <= 0:
            raise ValueError("busy is an edge density in [0, 1] and edge_threshold a Sobel magnitude > 0")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("image_mean and image_std are the processor's three per-channel values (std > 0)")


class Detail(SelectStage):
    name = "detail"
    needs_pixels = True  # the global view and the policy read the images the model was given

    def __init__(self, config: DetailConfig) -> None:
        self.config = config

    def check(self, adapter) -> None:
        super().check(adapter)
        if self.config.view == "image" and adapter.scale != 1:
            raise ValueError(
                f"detail's view='image' encodes each image again at a coarser patch grid, which {adapter.family}'s "
                "pixel-shuffle connector does not take at every size; use view='salient' (the default) or 'pool'"
            )
        if getattr(adapter, "thumbnail_last", False) and self.config.tiles == "thumbnail":
            return  # the budget follows the tiles a picture is cut into: checked once they are seen
        h, w = adapter.token_grid()
        self.budget(h, w, 1)  # raises if the keep cannot hold the global grid

    def view_grid(self, h: int, w: int) -> tuple[int, int] | None:
        """The grid the runtime encodes each image at for the global view; None when the view pools the full one."""
        return self.global_grid(h, w) if self.config.view == "image" else None

    def global_grid(self, h: int, w: int, share: float | None = None) -> tuple[int, int]:
        """The global view's grid for an h x w patch grid, taking ``share`` of its cells (default global_share x keep;
        at most all of them) unless the options fix the grid."""
        c = self.config
        if c.global_grid is not None:
            if c.global_grid[0] > h or c.global_grid[1] > w:
                raise ValueError(
                    f"global_grid {c.global_grid} is finer than the {h}x{w} patch grid; pass a smaller one"
                )
            return c.global_grid
        scale = math.sqrt(min(1.0, c.global_share * c.keep if share is None else share))
        return max(1, round(h * scale)), max(1, round(w * scale))

    def budget(self, h: int, w: int, images: int) -> int:
        """Visual tokens a sample of ``images`` h x w images may give the language model with details."""
        c = self.config
        gh, gw = self.global_grid(h, w)
        n, coarse = images * h * w, images * gh * gw
        total = round(c.keep * n)
        if total < coarse:
            raise ValueError(
                f"detail's {gh}x{gw} global view alone takes {coarse} of {n} tokens but keep {c.keep} allows {total}; "
                f"ask for keep >= {coarse / n:.3f} or pass a smaller global_grid"
            )
        return total

    def decide(self, v: Visuals) -> tuple[bool, str, str]:
        """(whether the sample gets details, why, the question text)."""
        c = self.config
        text = "" if c.tokenizer is None else question_text(c.tokenizer, v.question_ids)
        if c.details != "auto":
            return c.details == "always", f"details={c.details}", text
        if not text:
            raise ValueError("the question decodes to no text; put the question after the image")
        mean = torch.tensor(c.image_mean, device=v.pixels.device)[:, None, None]
        std = torch.tensor(c.image_std, device=v.pixels.device)[:, None, None]
        images = (v.pixels.float() * std + mean).clamp(0, 1)
        options = dict(words=c.words, max_words=c.max_words, edge_threshold=c.edge_threshold, busy=c.busy)
        reasons = [r for image in images for r in detail_reasons(image, text, **options)]
        reasons = list(dict.fromkeys(reasons))  # the question's reasons once, not once per image
        return bool(reasons), "; ".join(reasons) or "none", text

    def select(self, v: Visuals) -> Selection:
        if v.thumbnail and self.config.tiles == "thumbnail":
            return self.select_tiles(v)
        images, (h, w) = v.features.shape[0], v.grid
        gh, gw = self.global_grid(h, w)
        pooled = self.config.view != "image"  # the global view comes from the full view's own tokens
        if v.pixels is None or (not pooled and (v.view is None or v.view_grid != (gh, gw))):
            raise RuntimeError("detail got no global view from the runtime; this is a bug")
        count = images * gh * gw
        total = self.budget(h, w, images)
        wanted, why, text = self.decide(v)
        parts = named_parts(text) if wanted and self.config.focus else []
        x = v.features.flatten(0, 1)
        block = torch.cat([blocks(h, w, gh, gw, x.device) + f * gh * gw for f in range(images)])
        if self.config.view == "salient":
            g = x[salient(x, block, count, images)]
        else:
            g = region_means(x, block, count).to(x.dtype) if pooled else v.view.flatten(0, 1)
        whole = wanted or self.config.keep == 1.0  # keep 1 is the model unchanged, whatever the question asks
        if whole and total >= x.shape[0]:  # every detail token fits: the full view alone, as the model has it
            taken = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        elif wanted:
            score = novelty(x, g, block)  # in [0, 2]: + 2 ranks every cell of a named part before the rest
            if parts:
                score = score + 2 * part_cells(parts, h, w, x.device).repeat(images)
            taken = pick_details(score, block, count, total - count)
        else:
            taken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        at = stand_ins(block, taken, h, w, count)
        kept = at >= 0
        free = torch.bincount(block[~taken], minlength=count)  # cells each global token stands for
        mine = taken.nonzero()[:, 0]
        cells = torch.cat([mine, at[kept]])
        order = cells.argsort()
        features = torch.cat([x[mine], g[kept].to(x.dtype)])[order]
        sizes = torch.cat([torch.ones_like(mine), free[kept]])[order]
        info = {
            "details": wanted,
            "why": why,
            "detail_tokens": len(mine),
            "global_tokens": int(kept.sum()),
            "global_grid": [gh, gw],
            "view": self.config.view,
            "focus": focus_label(parts, False),
            "budget": total,
            "question_text": text,
        }
        return Selection(features, cells[order], sizes, [len(cells)] * v.layers, info)

    def select_tiles(self, v: Visuals) -> Selection:
        """A tiling family's sample: the thumbnail (last image) is the global view, the tiles hold the details. The
        model is not told where a tile lies in the picture, so a tile token's novelty is 1 - its best cosine with
        any global token (``ops.detail.unseen``)."""
        c, (h, w) = self.config, v.grid
        tiles, n = v.features.shape[0] - 1, h * w
        total = round(c.keep * (tiles + 1) * n)
        gh, gw = self.global_grid(h, w, c.global_share * total / n)  # the whole thumbnail when its share allows
        count = gh * gw
        if total < count:
            raise ValueError(
                f"detail's {gh}x{gw} global view of the thumbnail takes {count} tokens but keep {c.keep} allows "
                f"{total} of {(tiles + 1) * n}; ask for keep >= {count / ((tiles + 1) * n):.3f} or pass a smaller "
                "global_grid"
            )
        wanted, why, text = self.decide(v)
        x, thumb = v.features[:-1].flatten(0, 1), v.features[-1]
        block = blocks(h, w, gh, gw, thumb.device)
        if (gh, gw) == (h, w):
            g = thumb
        elif c.view == "salient":
            g = thumb[salient(thumb, block, count, 1)]
        else:
            g = region_means(thumb, block, count).to(thumb.dtype)
        extra = min(total - count, x.shape[0]) if wanted or c.keep == 1.0 else 0  # keep 1: the model unchanged
        picked = unseen(x, g).topk(extra).indices.sort().values if extra else x.new_zeros(0, dtype=torch.long)
        at = stand_ins(block, torch.zeros(n, dtype=torch.bool, device=thumb.device), h, w, count)
        cells = torch.cat([picked, at + tiles * n])  # tile cells come before the thumbnail's: already in order
        order = cells.argsort()
        features = torch.cat([x[picked], g])[order]
        sizes = torch.cat([torch.ones_like(picked), torch.bincount(block, minlength=count)])[order]
        info = {
            "details": wanted,
            "why": why,
            "detail_tokens": len(picked),
            "global_tokens": count,
            "global_grid": [gh, gw],
            "view": "thumbnail",
            "focus": focus_label(named_parts(text) if wanted and c.focus else [], True),
            "budget": total,
            "question_text": text,
        }
        return Selection(features, cells[order], sizes, [len(cells)] * v.layers, info)

    def llm_counts(self, entering: int, original: int, layers: int) -> list[int]:
        raise RuntimeError("detail's counts are chosen per sample by its select stage")  # the layout carries them
