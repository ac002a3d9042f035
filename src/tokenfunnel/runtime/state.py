"""What travels between the stages of one compressed forward, what a method must provide, and report()."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

RUN = "_tokenfunnel_run"  # attribute on a vision tower's output naming the EncoderRun that produced it


@dataclass
class EncoderRun:
    """The patch grid of every image inside one vision-tower forward, as OIM shrinks it."""

    prefix: int  # class/register tokens before the grid, never merged
    size: Tensor  # (I, h, w) original patches covered by each token
    rows: Tensor  # (I, h, 2) first/last original row each current row covers
    cols: Tensor  # (I, w, 2) first/last original column each current column covers
    steps: dict[int, tuple[str, int]]  # encoder layer -> ("cols" | "rows", pairs merged)
    proportional: bool
    patch_grid: tuple[int, int]  # the unmerged grid
    tokens: list[int] = field(default_factory=list)  # tokens entering each encoder layer
    # once a merge gives up the grid (ToMe, VisionZip), tokens are a set in raster order of their cells:
    cells: Tensor | None = None  # (I, n) the patch (raster index of the unmerged grid) whose placeholder each takes
    cover: Tensor | None = None  # (I, n, 4) [row0, row1, col0, col1] the original patches each covers
    # (I, H*W) the token holding each original patch, -1 once dropped: a merged set is not a box, so the boxes above
    # only bound it
    owner: Tensor | None = None
    pixels: Tensor | None = None  # the images the tower was given, kept only for plans that read them (needs_pixels)
    # a "score" step's work, deferred and cached: () -> ((I, n) LUVC's spectral score of each patch, (I, n, d) its
    # head-averaged keys), for a select stage that drops later (when the question is known) by what the encoder saw;
    # it runs on the first call, so a drop that ranks by something else (a part the question names) skips it
    patch_scores: Callable[[], tuple[Tensor, Tensor]] | None = None

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the current grid; a set of n tokens is reported as a (1, n) grid."""
        if self.cells is not None:
            return 1, self.cells.shape[1]
        return self.size.shape[1], self.size.shape[2]

    @property
    def merged(self) -> bool:
        return bool((self.size > 1).any())


@dataclass
class ScoreInput:
    """The visual tokens entering a decoder layer that is about to prune, for a method to score."""

    hidden: Tensor  # (B, n, D) their hidden states
    cells: Tensor  # (B, n) index of each into the sample's visual tokens as they left the encoder (-1: no token)
    images: list[tuple[int, int]]  # grid (h, w) of each image of a sample, in sequence order
    layer: nn.Module  # the decoder layer they are about to enter
    index: int  # its index
    sequence: Tensor | None = None  # (B, T, D) every token entering the layer (text too), for attention-based scores
    at: Tensor | None = None  # (B, n) where the visual tokens sit in ``sequence``
    valid: Tensor | None = None  # (B, T) False at padding
    rope: tuple[Tensor, Tensor] | None = None  # the layer's (cos, sin) position embeddings for ``sequence``
    present: Tensor | None = None  # (B, n) False at slots that hold no token (see Layout.cells); None: all hold one
    count: int | None = None  # how many of them the layer keeps (the largest sample's count in a ragged batch)


@dataclass
class Visuals:
    """One sample's visual tokens after the projector, for a plan's ``select`` stage (see
    ``adapters.placeholders.shrink_set``)."""

    features: Tensor  # (F, n, D) each image's projected tokens, raster over ``grid``
    grid: tuple[int, int]  # (h, w) of each image
    question: Tensor  # (q, D) the question's tokens in the language model's input embedding space
    question_ids: Tensor  # (q,) their ids
    layers: int  # decoder layers of the language model
    pixels: Tensor | None = None  # (F, 3, H, W) the images as the model got them, when the plan ``needs_pixels``
    # when the plan asks for a coarser view (``view_grid``): (F, h' * w', D) each image's projected tokens as the
    # unmodified tower and projector give them for the image downsampled to the (h', w') grid ``view_grid``
    view: Tensor | None = None
    view_grid: tuple[int, int] | None = None
    # tiling families (Idefics3/SmolVLM, InternVL) with several images in the sample: the last is a downscaled
    # thumbnail of the whole picture and the others its tiles, in an order the model is not told the layout of
    thumbnail: bool = False
    # () -> ((F, n), (F, n, d)): each image's patch scores and keys from the encoder's "score" step, when the plan has
    # one; computed on the first read of ``scores`` or ``metric``
    encoder_scores: Callable[[], tuple[Tensor, Tensor]] | None = None

    @property
    def scores(self) -> Tensor | None:
        return None if self.encoder_scores is None else self.encoder_scores()[0]

    @property
    def metric(self) -> Tensor | None:
        return None if self.encoder_scores is None else self.encoder_scores()[1]


@dataclass
class Selection:
    """What a ``select`` stage keeps of one sample: a set of tokens, each a merge of a group of input cells."""

    features: Tensor  # (k, D) the tokens, in the order of ``cells``
    cells: Tensor  # (k,) increasing: the input cell (image f, cell j -> f * n + j) whose placeholder each takes
    sizes: Tensor  # (k,) input cells merged into each
    counts: list[int]  # visual tokens entering each decoder layer (counts[0] <= k)
    info: dict  # what the stage decided, for report()
    # (k,) bool: tokens that every later drop in the language model ranks before the others (each group in the
    # plan's own score order); None: the plan's scores alone
    first: Tensor | None = None


class Plan(Protocol):
    """What the runtime asks of a compression method.

    Optional attributes, None or absent when unused: ``temporal`` (frames -> merged frames, between the projector
    and the LLM), ``select`` (per-sample token choice there), and ``fold(inputs, scores, count, size)`` -> (kept
    indices in order, their new hidden states, their sizes), which replaces the decoder's plain top-k when dropped
    tokens are to be folded into kept ones; ``context_lattice(images, layers)`` -> stride (frozen context,
    ``runtime.context``: the dropped tokens on that lattice of each image's grid stay on as keys and values), with
    which the decoder asks ``context_counts(entering, original, images, layers)`` instead of ``llm_counts`` and
    reports each frozen token at ``context_cost`` (its share of a token's cost in a layer).
    """

    proportional: bool

    def encoder_steps(self, h: int, w: int, layers: int) -> dict[int, tuple[str, int]]:
        """OIM steps for an h x w patch grid over the first ``layers`` encoder layers (those feeding the LLM)."""

    def llm_counts(self, entering: int, original: int, layers: int) -> list[int]:
        """Visual tokens entering each decoder layer, given how many leave the encoder and how many would unmodified."""

    def score(self, inputs: ScoreInput) -> Tensor:
        """(B, n) scores; the highest are kept."""


@dataclass
class Layout:
    """Where the visual tokens sit in the sequence entering the language model (set by the family adapter)."""

    visual: Tensor  # (B, T) bool
    images: list[tuple[int, int]]  # grid of each image of a sample after the encoder
    original: int  # visual tokens per sample the unmodified model would have
    boxes: list[Tensor]  # per image of the batch: (h*w, 4) [row0, row1, col0, col1] original patches covered
    patch_grid: tuple[int, int]  # the unmerged patch grid of one image
    # when tokens were dropped between the encoder and the LLM (temporal stages): (B, n) the cell of each visual
    # token of the sequence in its sample's ``images`` grids, -1 at slots that only pad a sample to the batch's count
    cells: Tensor | None = None
    temporal: dict | None = None  # what the temporal stages did, for report()
    # (B,) or (3, B): the position decoding continues from, when the kept positions cannot tell (M-RoPE: the
    # unshrunk prompt's largest position in any row, which a dropped video slice may have held, + 1)
    next_position: Tensor | None = None
    # per sample, the visual tokens entering each decoder layer, when a select stage decided them per sample
    schedules: list[list[int]] | None = None
    stage: dict | None = None  # what a select stage did, per sample, for report()
    # per image of the batch: (H*W,) the token holding each original patch, -1 where dropped; None when every token
    # covers exactly its box (grid merges, pooling), so the boxes say it
    owners: list[Tensor] | None = None
    # (B, cells of a sample) bool, from the select stage's ``Selection.first``: the cells whose tokens the decoder's
    # drops rank first
    first: Tensor | None = None


def owners_of(boxes: Tensor, grid: tuple[int, int]) -> Tensor:
    """(H*W,) the token whose box holds each original patch (-1: none), for tokens that tile their boxes."""
    b = torch.as_tensor(boxes)
    r, c = torch.arange(grid[0]), torch.arange(grid[1])
    inside_r = (b[:, :1] <= r) & (r <= b[:, 1:2])  # (n, H)
    inside_c = (b[:, 2:3] <= c) & (c <= b[:, 3:4])  # (n, W)
    inside = (inside_r[:, :, None] & inside_c[:, None, :]).flatten(1)  # (n, H*W)
    if not len(b):
        return torch.full((grid[0] * grid[1],), -1)
    return torch.where(inside.any(0), inside.int().argmax(0), -1)


@dataclass
class Record:
    """What the last compressed forward did; report() turns it into plain Python."""

    encoder_tokens: list[int] | None = None
    encoder_original: list[int] | None = None
    layout: Layout | None = None
    llm_visual_tokens: list = field(default_factory=list)  # per layer; per sample and layer when samples differ
    kept_cells: list[Tensor] = field(default_factory=list)  # per decoder layer, (B, n_l) cells entering it
    # frozen context: per decoder layer, (B, F) the cells of the frozen tokens whose keys and values it projects (-1:
    # padding; None: none yet), and a frozen token's cost in a layer as a share of a full token's (None: no frozen
    # context)
    context_cells: list[Tensor | None] = field(default_factory=list)
    context_cost: float | None = None

    def report(self) -> dict:
        if self.layout is None:
            raise RuntimeError("nothing to report yet; run a forward pass with an image through the model first")
        lay = self.layout
        out: dict = {}
        if self.encoder_tokens is not None:
            out["encoder_tokens"] = list(self.encoder_tokens)
            out["encoder_keep"] = round(sum(self.encoder_tokens) / sum(self.encoder_original), 6)
        counts = self.llm_visual_tokens
        if counts and isinstance(counts[0], list):  # samples of the batch kept different counts: one list each
            out["visual_tokens"] = [c[0] for c in counts]
            keeps = [sum(c) / (lay.original * len(c)) for c in counts]
            out["keep"] = round(sum(keeps) / len(keeps), 6)
            out["keep_per_sample"] = [round(k, 6) for k in keeps]
        else:
            out["visual_tokens"] = int(lay.visual[0].sum())
            out["keep"] = round(sum(counts) / (lay.original * len(counts)), 6)
        if self.context_cost is not None:
            out.update(self._context(counts, lay.original))
        out["original_visual_tokens"] = lay.original
        out["llm_visual_tokens"] = [list(c) for c in counts] if counts and isinstance(counts[0], list) else list(counts)
        out["grids"] = [list(g) for g in lay.images]
        out["patch_grid"] = list(lay.patch_grid)
        out["boxes"] = [b.tolist() for b in lay.boxes]
        owners = lay.owners if lay.owners is not None else [owners_of(b, lay.patch_grid) for b in lay.boxes]
        out["patch_owner"] = [o.tolist() for o in owners]
        out["kept"] = [[[c for c in row if c >= 0] for row in cells.tolist()] for cells in self.kept_cells]
        if lay.temporal is not None:
            out["temporal"] = {k: list(v) for k, v in lay.temporal.items()}
        if lay.stage is not None:
            out["stage"] = {k: list(v) for k, v in lay.stage.items()}
        return out

    def _context(self, counts: list, original: int) -> dict:
        """keep counting each frozen token at its cost, the frozen tokens per layer (one list per sample when
        samples differ), and their cells per layer and sample (as ``kept``)."""
        b = self.kept_cells[0].shape[0]
        none = torch.full((b, 0), -1, dtype=torch.long)
        cells = [none if c is None else c.cpu() for c in self.context_cells]
        frozen = torch.stack([(c >= 0).sum(1) for c in cells], dim=1).tolist()
        visual = counts if counts and isinstance(counts[0], list) else [list(counts)] * b
        cost = self.context_cost
        keeps = [(sum(v) + cost * sum(f)) / (original * len(v)) for v, f in zip(visual, frozen, strict=True)]
        out = {"keep": round(sum(keeps) / b, 6), "context_cost": round(cost, 6)}
        if len(set(keeps)) > 1 or visual is counts:  # a ragged batch reports it as without frozen context
            out["keep_per_sample"] = [round(k, 6) for k in keeps]
        out["llm_context_tokens"] = frozen if any(f != frozen[0] for f in frozen) else frozen[0]
        out["context"] = [[[c for c in row if c >= 0] for row in layer.tolist()] for layer in cells]
        return out
