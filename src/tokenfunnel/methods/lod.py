"""Query-relevance level of detail (training-free): between the projector and the language model, regions of the
patch grid are ranked by how alike their tokens are to the question's tokens in the language model's input
embedding space (no attention needed); the most relevant regions keep every token, the next tier a few merged
tokens, the rest one pooled token each. Optionally LUVC's spectral cascade then prunes inside the language model.

Each kept token is the size-weighted mean of its group of cells and takes the placeholder (so the position) of the
group's most relevant cell. Defaults follow the design: tiers of (20 regions x 8 tokens, 30 x 3, 23 x 1) for 73
regions, scaled to the regions of the input; regions of 2 x 4 cells, so the top tier keeps a region whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from tokenfunnel.methods.common import SelectStage, can_decode, check_keep, decoder_layers, focus_label, question_text
from tokenfunnel.methods.luvc import spectral_score
from tokenfunnel.ops.budget import cascade
from tokenfunnel.ops.detail import named_parts, part_cells
from tokenfunnel.ops.relevance import REDUCE, allot, check_tiers, group_by_relevance, region_means, regions, relevance
from tokenfunnel.ops.setmerge import group_mean
from tokenfunnel.runtime.state import ScoreInput, Selection, Visuals

TIERS = ((20, 8), (30, 3), (23, 1))


@dataclass(frozen=True)
class LODConfig:
    """Options of lod.

    keep: None keeps what the tiers give (the language model sees it at every layer; report() gives the realised
        keep). A number scales the tiers' tokens per region so the language model gets ``keep`` of the visual
        tokens on average: all of them at every layer, or with ``cascade`` twice that many (at most all) entering
        it, pruned down to none by LUVC's cascade (LUVC's own split between its encoder and decoder stages).
    tiers: (regions, tokens per region) from the most relevant tier down; the region counts are shares, scaled
        to the number of regions of the input. Tokens per region must fall from tier to tier.
    region: (rows, cols) cells per region.
    reduce: how a token's cosines with the question's tokens become one relevance: "mean" over the question, or
        "max" (its best matching question token). "mean" by default: no single token (a "?", a newline) can then
        decide the ranking alone; on 30 easyvqa-grid test mosaics it scored 0.50 against max's 0.43, within noise.
    cascade: prune inside the language model with LUVC's linear cascade (needs keep); cutoff: its spectral score.
    focus: where the question names a part of the picture (a corner, "top-left"; a half, "left half"; see
        ``ops.detail.named_parts``), the regions mostly inside it rank above every other region, by relevance among
        themselves. The embeddings of "top-left" say nothing about where a region lies, so relevance alone cannot
        find the part (180 dev mosaics, keep 0.25: 0.867 with focus, 0.739 without). Needs the tokenizer. Not
        applied to a tiling family's tiles (the model is not told where a tile lies); ``report()["stage"]["focus"]``
        gives the part used per sample.
    tokenizer: the processor's tokenizer (``processor.tokenizer``), to read the question; only used with focus.
    """

    keep: float | None = None
    tiers: tuple[tuple[int, int], ...] = TIERS
    region: tuple[int, int] = (2, 4)
    reduce: str = "mean"
    cascade: bool = False
    cutoff: float = 0.5
    focus: bool = True
    tokenizer: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.keep is not None:
            check_keep(self.keep)
        check_tiers(self.tiers)
        object.__setattr__(self, "tiers", tuple((int(r), int(t)) for r, t in self.tiers))
        if len(self.region) != 2 or min(self.region) < 1:
            raise ValueError(f"region is (rows, cols) cells, both >= 1, got {self.region}")
        object.__setattr__(self, "region", (int(self.region[0]), int(self.region[1])))
        if self.tiers[0][1] > self.region[0] * self.region[1]:
            raise ValueError(
                f"the top tier keeps {self.tiers[0][1]} tokens per region but a {self.region[0]}x{self.region[1]} "
                "region holds fewer cells; lower the tier or enlarge region"
            )
        if self.reduce not in REDUCE:
            raise ValueError(f"reduce must be one of {REDUCE}, got {self.reduce!r}")
        if self.cascade and self.keep is None:
            raise ValueError("cascade prunes to a mean number of tokens: pass keep as well (e.g. keep=0.25)")
        if not 0 < self.cutoff <= 1:
            raise ValueError(f"cutoff must be in (0, 1], got {self.cutoff}")
        if self.focus and not can_decode(self.tokenizer):
            raise ValueError(
                "lod's focus reads the question as text: pass the processor's tokenizer, "
                "compress(model, 'lod', tokenizer=processor.tokenizer), or focus=False"
            )


class LOD(SelectStage):
    name = "lod"

    def __init__(self, config: LODConfig) -> None:
        self.config = config

    def check(self, adapter) -> None:
        super().check(adapter)
        h, w = adapter.token_grid()
        self._plan(h, w, 1, decoder_layers(adapter))  # raises if the grid cannot honour the options

    def _plan(self, h: int, w: int, images: int, layers: int) -> tuple[Tensor, int | None, list[int] | None]:
        """(region of each cell of the sample's images, the token total or None, counts per layer or None)."""
        c = self.config
        one = regions(h, w, c.region)
        per_image = int(one.max()) + 1
        region = torch.cat([one + f * per_image for f in range(images)])
        n = images * h * w
        if c.keep is None:
            return region, None, None
        entering = round(min(1.0, 2 * c.keep if c.cascade else c.keep) * n)
        if entering < images * per_image:
            raise ValueError(
                f"lod keeps at least one token per region ({images * per_image} regions of {n} tokens); "
                f"ask for keep >= {images * per_image / n:.3f} or use a larger region"
            )
        if not c.cascade:
            return region, entering, [entering] * layers
        try:
            return region, entering, cascade(entering, layers, c.keep * n)
        except ValueError as err:
            raise ValueError(f"lod cannot reach keep {c.keep} with the cascade: {err}") from None

    def select(self, v: Visuals) -> Selection:
        c = self.config
        images, h, w = v.features.shape[0], *v.grid
        region, total, counts = self._plan(h, w, images, v.layers)
        x = v.features.flatten(0, 1)
        count = int(region.max()) + 1
        region = region.to(x.device)
        score = relevance(region_means(x, region, count), v.question, c.reduce)
        text = question_text(c.tokenizer, v.question_ids) if c.focus else ""
        parts, rank = named_parts(text), score
        if parts and not v.thumbnail:
            inside = part_cells(parts, h, w, x.device).repeat(images).float()
            share = torch.bincount(region, weights=inside, minlength=count) / torch.bincount(region, minlength=count)
            rank = score + 2 * (share >= 0.5).to(score)  # cosines lie in [-1, 1]: the named part ranks first
        take = allot(rank, torch.bincount(region, minlength=count), c.tiers, total)
        assign, rep = group_by_relevance(region, relevance(x, v.question, c.reduce), x, take)
        features, sizes = group_mean(x, torch.ones_like(region), assign, len(rep))
        k = len(rep)
        info = {
            "regions": count,
            "region_tokens": take.tolist(),
            "relevance": [round(float(s), 4) for s in score],
        }
        if c.focus:
            info["focus"] = focus_label(parts, v.thumbnail)
            info["question_text"] = text
        return Selection(features, rep, sizes, counts if counts is not None else [k] * v.layers, info)

    def llm_counts(self, entering: int, original: int, layers: int) -> list[int]:
        raise RuntimeError("lod's counts are chosen per sample by its select stage")  # the layout carries them

    def score(self, inputs: ScoreInput) -> Tensor:
        return spectral_score(inputs, self.config.cutoff)
