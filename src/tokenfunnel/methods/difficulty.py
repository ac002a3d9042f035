"""Difficulty-aware budgets (training-free): how hard an (image, question) pair looks sets its token budget.

Difficulty in [0, 1] = 0.6 image + 0.4 question (see ``tokenfunnel.ops.difficulty``); tiers easy < 0.3, medium
< 0.6, hard < 0.85, very hard get 64 / 144 / 256 / 400 tokens for a 576-token input, scaled to the input. Between
the projector and the language model LUVC's drop as it ships (1-D spectral score of the encoder's output, a share
of the kept tokens contextual) takes the tokens to the budget, held through every decoder layer. The design's
reduction (bipartite merges while more than 2x over, spectral pruning while more than 1.5x over, near-duplicates
folded, then a cascade inside the language model) is an option (``reduction``, ``schedule``): it measured lower on
dev mosaics. The budget is the realised keep times the input's tokens, so ``keep`` is not
an option; ``handle.report()`` gives it per sample.

The question is read as text, so the config needs the processor's tokenizer. The weights are the design's
starting point; fitting them on a dev split is a later step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import torch
from torch import Tensor

from tokenfunnel.methods.common import SelectStage, can_decode, focus_label, question_text
from tokenfunnel.methods.luvc import ENCODER_CONTEXTUAL, grid_scores, spectral_drop, spectral_score
from tokenfunnel.ops.budget import cascade
from tokenfunnel.ops.detail import named_parts, part_cells
from tokenfunnel.ops.difficulty import (
    Weights,
    colour_variance,
    count_objects,
    difficulty,
    edge_density,
    question_signals,
    reduce_to,
    scaled_budget,
    tier_of,
)
from tokenfunnel.runtime.state import ScoreInput, Selection, Visuals

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIER_NAMES = ("easy", "medium", "hard", "very hard")
SCHEDULES = ("held", "cascade", "none")
REDUCTIONS = ("steps", "spu")


@dataclass(frozen=True)
class DifficultyConfig:
    """Options of difficulty.

    tokenizer: the processor's tokenizer (``processor.tokenizer``), to read the question; required.
    weights: how signals make the difficulty (``tokenfunnel.ops.difficulty.Weights``).
    bounds: difficulty below bounds[i] falls in tier i, else in the last tier.
    budgets: mean visual tokens per decoder layer of each tier, for an input of ``reference`` tokens (scaled to
        the input); they must increase and fit in ``reference``.
    reduction: how the tokens get near the budget. "spu" (the default, chosen on dev: docs/adaptive-record.md): none of
        the steps below, the whole set goes to ``schedule`` (with "held", LUVC's drop as it ships from the full set
        to the budget: LUVC at a keep chosen per sample, scored by the encoder's last layer on the LLaVA family, by
        the projected tokens on pixel-shuffle families). "steps" (the design's): merges while more than 2x over,
        pruning while more than 1.5x over, then near-duplicates folded (``merge_keep``, ``prune_keep``,
        ``duplicate``; see ``tokenfunnel.ops.difficulty.reduce_to``).
    merge_keep, prune_keep, duplicate: the reduction steps (with reduction="steps").
    schedule: what follows the reduction. "held" (the default, chosen on dev: docs/adaptive-record.md): LUVC's drop as
        it ships brings the tokens to the budget before the language model (1-D spectral score, ``ENCODER_CONTEXTUAL``
        of them contextual tokens) and every decoder layer sees them; "cascade": LUVC's first design, a linear cascade
        falling to none at the last layer, ranked by the 2-D spectral score, with the budget as its mean; "none": the
        reduced set (up to 1.5x the budget) at every layer.
    cutoff: low-pass cutoff of the spectral scores used to prune, before and inside the language model.
    focus: where the question names a part of the picture (a corner, "top-left"; a half, "left half"; see
        ``ops.detail.named_parts``), the held drop keeps that part's tokens first and gives it no contextual tokens
        (as LUVC's ``focus``). Only with schedule="held"; not applied to a tiling family's tiles (the model is not told
        where a tile lies). ``report()["stage"]["focus"]`` gives the part used per sample.
    image_mean, image_std: the processor's normalisation, undone to read the pixels (ImageNet's, the bundled VLM's).
    edge_threshold: Sobel magnitude (a unit step gives 1) above which a pixel is an edge.
    """

    tokenizer: object = field(default=None, repr=False, compare=False)
    weights: Weights = Weights()
    bounds: tuple[float, ...] = (0.3, 0.6, 0.85)
    budgets: tuple[int, ...] = (64, 144, 256, 400)
    reference: int = 576
    merge_keep: float = 0.7
    prune_keep: float = 0.8
    duplicate: float = 0.95
    reduction: str = "spu"
    schedule: str = "held"
    cutoff: float = 0.5
    focus: bool = True
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    edge_threshold: float = 0.2

    def __post_init__(self) -> None:
        if not can_decode(self.tokenizer):
            raise ValueError(
                "difficulty reads the question as text: pass the processor's tokenizer, "
                "compress(model, 'difficulty', tokenizer=processor.tokenizer)"
            )
        bounds, budgets = list(self.bounds), list(self.budgets)
        if not bounds or bounds != sorted(set(bounds)) or not 0 < bounds[0] or bounds[-1] >= 1:
            raise ValueError(f"bounds must increase within (0, 1), got {bounds}")
        if len(budgets) != len(bounds) + 1:
            raise ValueError(f"{len(bounds)} bounds make {len(bounds) + 1} tiers, but got {len(budgets)} budgets")
        if budgets[0] < 1 or any(a >= b for a, b in pairwise(budgets)):
            raise ValueError(f"tier budgets must increase from the easiest tier and be >= 1, got {budgets}")
        if budgets[-1] > self.reference:
            raise ValueError(
                f"a budget of {budgets[-1]} tokens is larger than the {self.reference}-token input it is given for; "
                f"lower it or raise reference"
            )
        for name in ("merge_keep", "prune_keep"):
            if not 0.5 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0.5, 1) (the fraction one step keeps), got {getattr(self, name)}")
        if not 0 <= self.duplicate <= 1:
            raise ValueError(f"duplicate must be a cosine in [0, 1], got {self.duplicate}")
        if not 0 < self.cutoff <= 1:
            raise ValueError(f"cutoff must be in (0, 1], got {self.cutoff}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("image_mean and image_std are the processor's three per-channel values (std > 0)")


class Difficulty(SelectStage):
    name = "difficulty"
    needs_pixels = True  # the image signals read the pixels the model was given

    def __init__(self, config: DifficultyConfig) -> None:
        self.config = config
        self.encoder_scores = False  # whether the encoder's last layer scores the patches (set by check)

    def check(self, adapter) -> None:
        super().check(adapter)
        # one token per patch: the encoder's scores rank the projected tokens (pixel shuffle would mix four)
        self.encoder_scores = self.config.reduction == "spu" and adapter.scale == 1

    def encoder_steps(self, h: int, w: int, layers: int) -> dict[int, tuple[str, float]]:
        return {layers - 1: ("score", self.config.cutoff)} if self.encoder_scores else {}

    def signals(self, pixels: Tensor, question: str) -> dict[str, float]:
        """The image signals (averaged over a sample's images) and the question's."""
        c = self.config
        mean = torch.tensor(c.image_mean, device=pixels.device)[:, None, None]
        std = torch.tensor(c.image_std, device=pixels.device)[:, None, None]
        images = (pixels.float() * std + mean).clamp(0, 1)
        per_image = [(edge_density(p, c.edge_threshold), colour_variance(p), count_objects(p)) for p in images]
        edges, colour, objects = (sum(v) / len(per_image) for v in zip(*per_image, strict=True))
        return {"edges": edges, "colour": colour, "objects": objects, **question_signals(question)}

    def select(self, v: Visuals) -> Selection:
        c = self.config
        if v.pixels is None:
            raise RuntimeError("difficulty got no pixels from the vision tower; this is a bug")
        text = question_text(c.tokenizer, v.question_ids)
        if not text:
            raise ValueError("the question decodes to no text; put the question after the image")
        signals = self.signals(v.pixels, text)
        value, image, question = difficulty(signals, c.weights)
        tier = tier_of(value, c.bounds)
        images = v.features.shape[0]
        n = images * v.grid[0] * v.grid[1]
        budget = scaled_budget(c.budgets[tier], n, c.reference)
        x = v.features.flatten(0, 1)
        cells = torch.arange(n, device=x.device)
        grids = [v.grid] * images

        def spectral(tokens: Tensor, at: Tensor) -> Tensor:
            return grid_scores(tokens[None].float(), at[None], grids, c.cutoff)[0]

        if c.reduction == "steps":
            reduced = reduce_to(x, cells, budget, spectral, c.merge_keep, c.prune_keep, c.duplicate)
            features, cells, sizes, steps = reduced.features, reduced.cells, reduced.sizes, list(reduced.steps)
        else:
            features, sizes, steps = x, torch.ones_like(cells), []
        k = features.shape[0]
        parts = named_parts(text) if c.focus and c.schedule == "held" else []
        if c.schedule == "held" and k > budget:
            scored = {}  # the encoder's scores rank the whole set (reduction "spu" on a one-token-per-patch family)
            if c.reduction == "spu" and v.scores is not None and v.metric is not None:
                scored = {"scores": v.scores.flatten()[None], "metric": v.metric.flatten(0, 1)[None]}
            first = part_cells(parts, *v.grid, x.device).repeat(images)[cells] if parts and not v.thumbnail else None
            contextual = 0 if first is not None else min(budget - 1, round(ENCODER_CONTEXTUAL * budget))
            idx, kept, held = spectral_drop(
                features[None], budget - contextual, contextual, c.cutoff, first, size=sizes[None], **scored
            )
            features, cells, sizes, k = kept[0], cells[idx[0]], held[0], budget
            steps.append("spu")
        if c.schedule == "cascade" and k > budget:
            # the mean count is the budget where the cascade can reach it (it ends at zero, so from k tokens
            # at most k (L-1)/L on average)
            counts = cascade(k, v.layers, min(budget, k * (v.layers - 1) / v.layers))
        else:
            counts = [k] * v.layers
        info = {
            "difficulty": round(value, 4),
            "image": round(image, 4),
            "question": round(question, 4),
            "tier": TIER_NAMES[tier] if len(c.budgets) == len(TIER_NAMES) else tier,
            "budget": budget,
            "steps": steps,
            "question_text": text,
            "focus": focus_label(parts, v.thumbnail),
            "signals": {key: round(float(val), 4) for key, val in signals.items()},
        }
        return Selection(features, cells, sizes, counts, info)

    def llm_counts(self, entering: int, original: int, layers: int) -> list[int]:
        raise RuntimeError("difficulty's counts are chosen per sample by its select stage")  # the layout carries them

    def score(self, inputs: ScoreInput) -> Tensor:
        return spectral_score(inputs, self.config.cutoff)
