"""LUVC: orthogonal grid merging in the vision encoder (OIM), then attention-free spectral pruning in the language
model that cascades the visual tokens down to none at the last layer (SPU). After arXiv 2512.09010; the design and
defaults are ours, chosen on the easy-VQA dev split (docs/luvc-record.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from tokenfunnel.methods.common import can_decode, check_keep, decoder_layers, focus_label, oim_steps, question_text
from tokenfunnel.ops.budget import SHAPES, cascade
from tokenfunnel.ops.detail import ahead, named_parts, part_cells
from tokenfunnel.ops.lattice import lattice_size
from tokenfunnel.ops.pool import cell_groups
from tokenfunnel.ops.select import best_per_group, gather_tokens, topk_in_order
from tokenfunnel.ops.setmerge import fold_rest
from tokenfunnel.ops.spectrum import highfreq_score
from tokenfunnel.runtime.context import check_layer, kv_share
from tokenfunnel.runtime.state import ScoreInput, Selection, Visuals

SPECTRA = ("2d", "1d", "channel")
STAGES = ("auto", "llm", "encoder")
CONTEXTS = ("none", "frozen")
# contextual share of the encoder stage when none is asked for: VisionZip's 10 of 64, which led no contextual tokens
# on dev single images and mosaics (0.3 measured level with it: docs/luvc-record.md, "How the defaults were chosen")
ENCODER_CONTEXTUAL = 10 / 64
# the luvc-focus preset's hold: the share of the budget that carries every token through the first decoder layers
# when the question names a part; 2/3 led the drops tried on dev mosaics at keep 0.25 (docs/luvc-record.md)
FOCUS_HOLD = 2 / 3
# frozen context's lattice when none is asked for (context_stride=None): the densest whose keys and values cost at most
# this share of the tokens the drop keeps. On dev mosaics (800 questions): stride 2 at keep 0.25 (16%) gained 1.0 and
# 1.6 points on two draws; at keep 0.11 stride 2 (34%) lost 2.2, stride 3 (19%) 0.4, stride 4 (8%) gained 0.2. A sixth
# picks the best of each (docs/luvc-record.md)
CONTEXT_SHARE = 1 / 6


@dataclass(frozen=True)
class LUVCConfig:
    """Options of LUVC; ``keep`` is the FLOP-equivalent fraction of visual tokens over the decoder layers.

    The defaults were chosen on the easy-VQA dev split (docs/luvc-record.md, "How the defaults were chosen"): on the
    bundled VLM every amount of OIM cost accuracy and bought no encoder time, a 1-D spectrum beat the 2-D one, one drop
    held to the last layer beat a falling cascade while scoring once instead of at every layer, the model reads the
    picture until its last layers (so the last layer keeps its tokens: ``final_zero=False``), and on the LLaVA family
    the drop after the encoder with contextual tokens led every other setting.

    grid_keep: fraction of the patch grid that leaves the encoder through OIM (1.0, the default, disables OIM;
        None splits the budget: min(1, 2 * keep) leaves the encoder and the decoder cascade falls from there).
    encoder_start: fraction of the encoder layers feeding the LLM after which merge steps begin (one per layer).
    proportional: add log(size) to the encoder attention logits once tokens are merged.
    shape, start, final_zero, every: the decoder cascade (see ``tokenfunnel.ops.budget.cascade``): "flat" drops
        once at ``start`` and holds the count; "linear", "geometric" and "step" fall layer after layer.
        ``final_zero=True`` empties the last layer (the paper's schedule; off by default, see above). ``every`` > 1
        prunes only every that many layers (less scoring, coarser cascade).
    spectrum: "1d" (low-pass over the visual sequence), "2d" (over each image's grid) or "channel".
    cutoff: low-pass cutoff as a fraction of Nyquist. prefer: keep the "high"- or "low"-frequency tokens.
    normed: score the layer's normalised input rather than the raw residual stream.
    contextual: share of each drop's kept tokens that are not kept as they are but hold the dropped ones: the
        tokens below the spectral cut are grouped onto that many of them (spread evenly, each joining the one its
        normalised state is most alike, as VisionZip's contextual tokens) and averaged, weighted by the tokens
        each already holds. None (the default): ``ENCODER_CONTEXTUAL`` at the encoder stage, 0 (drop them) in the
        language model, where it measured level with dropping and would refuse batches of unequal token counts.
    stage: where the SPU drop happens. "auto" (the default): "encoder" on the LLaVA family without OIM, else "llm".
        "llm": before decoder layer ``start``, on the layer's input, then the cascade. "encoder" (LLaVA family):
        right after the last encoder layer that feeds the projector, on that layer's output (1-D spectrum,
        ``cutoff``), attention-free; ``contextual`` is then the share of the tokens kept that are VisionZip-style
        contextual tokens (the dropped patches grouped by key likeness and averaged) rather than top-scoring
        patches. The language model sees the kept tokens at every layer, none at the last with ``final_zero``; the
        count is set so the realised keep is ``keep``. No OIM with it (grid_keep=1).
    coverage: share of each drop's kept tokens picked one per block of the image grid (as many blocks as that
        share of the count, each image's blocks a grid of its aspect): each block's highest-scoring token, so that
        every part of the picture keeps a token; the rest by score anywhere. 0 (the default) ranks by score alone.
    focus: where the question names a part of the picture (a corner, "top-left"; a half, "left half"; see
        ``ops.detail.named_parts``), the encoder-stage drop keeps that part's tokens before any other, by spectral
        score within it, and (unless ``contextual`` is given) with no contextual tokens; questions that name no
        part are ranked by score alone, as without focus. The question is only known once the
        prompt is, after the encoder has run (``generate()`` encodes the images first), so with focus the encoder's
        last layer only scores the patches (the same 1-D spectral score and keys as the encoder stage) and the drop
        runs between the projector and the language model, where the contextual tokens average projected tokens.
        At stage "llm" every token enters the language model and the decoder's drops (from ``start``) rank the named
        part's tokens first, each by the layer's own score. LLaVA family and grid_keep=1 only; needs ``tokenizer``.
        ``report()["stage"]["focus"]`` gives the part used per sample.
    hold: with focus, for a question that names a part and a budget of no more tokens than that part has: the
        share of the budget spent carrying every token through the first decoder layers, as many as it pays for; then
        the drop keeps the named part's tokens first (by the layer's spectral score) and holds what the rest of the
        budget allows to the last layer. The model reads the whole picture in its first layers and the named part
        after. Where the budget holds more than the part (keep 0.5 on a quarter), the tokens beyond it measured
        better kept to the end, and other questions get the drop they get with ``hold=0`` (the default). The
        ``luvc-focus`` preset holds ``FOCUS_HOLD`` (2/3).
    context: what becomes of the tokens the language model's drops take out. "none" (the default): they are gone.
        "frozen": those on every ``context_stride``-th row and column of the image's grid stay on as keys and values
        that only the visual tokens still in the sequence attend (text does not, nor does decoding): each keeps the
        state it had at the drop, and each later layer projects only its key and value, about 1/16 of a token's
        cost on the bundled VLM's language model and 1/6 at LLaVA-7B's shape. The budget pays for them: the counts
        after the drop are lowered by what the lattice's keys and values would cost if none of it were kept, and
        ``report()`` counts each frozen token at its share (``context_cost``) in ``keep``, so the realised keep is
        at most the asked one. Acts only on drops inside the language model (stage "llm", or hold on a named part);
        SDPA or eager attention; no contextual folding with it.
    context_stride: the lattice of frozen context: every that many rows and columns (2: a quarter of the grid). None:
        the densest lattice (stride 2 or more) whose keys and values cost at most ``CONTEXT_SHARE`` of the tokens the
        drop keeps; the ``luvc-focus`` preset runs frozen context so.
    tokenizer: the processor's tokenizer (``processor.tokenizer``), to read the question; only used with focus.
    """

    keep: float = 0.25
    grid_keep: float | None = 1.0
    encoder_start: float = 0.5
    proportional: bool = False
    shape: str = "flat"
    start: int = 0
    final_zero: bool = False
    every: int = 1
    spectrum: str = "1d"
    cutoff: float = 0.5
    prefer: str = "high"
    normed: bool = True
    contextual: float | None = None
    coverage: float = 0.0
    stage: str = "auto"
    focus: bool = False
    hold: float = 0.0
    context: str = "none"
    context_stride: int | None = 2
    tokenizer: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if self.focus:
            _check_focus(self)
        if self.grid_keep is not None and not 0 < self.grid_keep <= 1:
            raise ValueError(f"grid_keep must be in (0, 1] or None, got {self.grid_keep}")
        if not 0 <= self.encoder_start < 1:
            raise ValueError(f"encoder_start must be in [0, 1), got {self.encoder_start}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.spectrum not in SPECTRA:
            raise ValueError(f"spectrum must be one of {SPECTRA}, got {self.spectrum!r}")
        if not 0 < self.cutoff <= 1:
            raise ValueError(f"cutoff must be in (0, 1], got {self.cutoff}")
        if self.prefer not in ("high", "low"):
            raise ValueError(f"prefer must be 'high' or 'low', got {self.prefer!r}")
        if self.every < 1:
            raise ValueError(f"every must be >= 1 (decoder layers between drops), got {self.every}")
        if self.start < 0:
            raise ValueError(f"start must be a decoder layer index >= 0, got {self.start}")
        if not 0 <= self.hold < 1:
            raise ValueError(f"hold must be a share in [0, 1) of the budget, got {self.hold}")
        if self.hold and not self.focus:
            raise ValueError("hold only acts where the question names a part: use it with focus=True, or hold=0")
        if self.hold and self.stage == "llm":
            raise ValueError("hold sets the drop's layer at stage 'auto' or 'encoder'; at stage='llm' give start")
        if self.contextual is not None and not 0 <= self.contextual < 1:
            raise ValueError(f"contextual must be a share in [0, 1) of the tokens a drop keeps, got {self.contextual}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.stage == "encoder" and self.grid_keep != 1.0:
            raise ValueError("stage must be 'llm' with OIM (grid_keep < 1 or None); stage='encoder' needs grid_keep=1")
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if self.context_stride is not None and self.context_stride < 1:
            raise ValueError(f"context_stride must be >= 1 (rows and columns apart), got {self.context_stride}")
        if self.context == "frozen" and self.stage == "encoder":
            raise ValueError("frozen context keeps what the language model's drops take out: use it with stage='llm'")
        if self.context == "frozen" and self.contextual:
            raise ValueError("frozen context and contextual folding both hold dropped tokens: pick one (contextual=0)")
        if not 0 <= self.coverage <= 1:
            raise ValueError(f"coverage must be a share in [0, 1] of the tokens a drop keeps, got {self.coverage}")


def _check_focus(config: LUVCConfig) -> None:
    if not can_decode(config.tokenizer):
        raise ValueError(
            "luvc's focus reads the question as text: pass the processor's tokenizer, "
            "compress(model, 'luvc', focus=True, tokenizer=processor.tokenizer)"
        )
    if config.grid_keep != 1.0:
        raise ValueError(
            "luvc's focus ranks the named part on the whole patch grid, which OIM merges away: use it with grid_keep=1 "
            "(the default)"
        )


def resolve_stage(config: LUVCConfig, family: str | None) -> tuple[str | None, float]:
    """(stage, contextual share) ``config`` runs with on a model of ``family``; the stage is None while the family
    is unknown (None) and "auto" depends on it."""
    stage = config.stage
    if stage == "auto":
        if config.grid_keep != 1.0:
            stage = "llm"  # OIM merges in the encoder: the drop goes to the language model
        elif family is None:
            stage = None
        else:
            stage = "encoder" if family == "llava" else "llm"
    if config.contextual is not None:
        return stage, config.contextual
    return stage, ENCODER_CONTEXTUAL if stage == "encoder" else 0.0


@dataclass(frozen=True)
class LUVCFocusConfig(LUVCConfig):
    """LUVC with ``focus=True``, ``hold=FOCUS_HOLD`` and frozen context on a lattice sized to the budget (the
    ``luvc-focus`` preset): the tokens of the part of the picture the question names go first, after the first layers
    have read every token, and go on seeing a frozen lattice of the rest; needs the processor's tokenizer."""

    focus: bool = True
    hold: float = FOCUS_HOLD
    context: str = "frozen"
    context_stride: int | None = None


class LUVC:
    name = "luvc"

    def __init__(self, config: LUVCConfig) -> None:
        self.config = config
        self.proportional = config.proportional
        self.layers: int | None = None  # decoder layers, known once check() has seen the model
        # "llm" or "encoder", and the contextual share; "auto" without OIM waits for check() to see the family
        self.stage, self.contextual = resolve_stage(config, None)
        # what the decoder calls instead of a plain top-k when dropped tokens are folded, None when they are not
        self.fold = None
        # the drop between the projector and the language model (focus), None when the encoder drops
        self.select = None
        # frozen context (see ``LUVCConfig.context``): (images, layers) -> the lattice's stride, None when off; what a
        # frozen token costs in a layer, as a share of a token
        self.context_lattice = self._lattice if config.context == "frozen" else None
        self.context_cost = 0.0

    def check(self, adapter) -> None:
        if self.config.stage == "encoder" and adapter.family != "llava":
            raise ValueError(
                f"luvc's stage='encoder' runs on LLaVA-family models only (one language-model token per patch, which "
                f"{adapter.family} does not have); use stage='llm' or 'auto' (the default) there"
            )
        if self.config.focus and adapter.family != "llava":
            raise ValueError(
                f"luvc's focus runs on LLaVA-family models only ({adapter.family} is not one); use focus=False there, "
                "or the detail method, whose focus also reads the question"
            )
        self.layers = decoder_layers(adapter)
        self.stage, self.contextual = resolve_stage(self.config, adapter.family)
        if self.context_lattice is not None:
            if self.stage == "encoder" and not (self.config.focus and self.config.hold):
                raise ValueError(
                    f"frozen context keeps what the language model's drops take out, and on {adapter.family} luvc "
                    "drops after the encoder: use stage='llm' (or focus with hold)"
                )
            first = adapter.text_model.layers[0]
            check_layer(first)
            self.context_cost = kv_share(first)
        self.fold = self._fold if self.contextual > 0 and self.stage == "llm" else None
        self.select = self._select if self.config.focus else None

    def _grid_fraction(self) -> float:
        c = self.config
        return min(1.0, 2 * c.keep) if c.grid_keep is None else c.grid_keep

    def encoder_steps(self, h: int, w: int, layers: int) -> dict[int, tuple[str, int]]:
        c = self.config
        if self.stage is None:
            raise RuntimeError("luvc's stage='auto' ran before check() saw the model's family; this is a bug")
        if self.stage == "llm":
            return oim_steps(h, w, layers, self._grid_fraction(), c.encoder_start)
        if c.keep == 1.0:
            return {}
        if self.select is not None:  # score what the encoder's last layer gives; the drop waits for the question
            return {layers - 1: ("score", c.cutoff)}
        dominant, contextual = self._split(h, w, self.contextual)
        return {layers - 1: ("spu", (dominant, contextual, c.cutoff))}

    def _split(self, h: int, w: int, context: float) -> tuple[int, int]:
        """(dominant, contextual) tokens the encoder-stage drop keeps of an h x w grid, ``context`` the latter share."""
        c = self.config
        if self.layers is None:
            raise RuntimeError("luvc's encoder stage ran before check() saw the model; this is a bug")
        # the tokens kept enter every decoder layer but, with final_zero, the last: so many that the mean is keep
        share = c.keep * self.layers / (self.layers - 1) if c.final_zero and self.layers > 1 else c.keep
        n = min(h * w, round(share * h * w))
        if n < 1:
            raise ValueError(f"luvc cannot keep {c.keep} of a {h}x{w} grid: that is no token at all; ask for more")
        contextual = min(n - 1, round(context * n)) if n < h * w else 0
        return n - contextual, contextual

    def _select(self, v: Visuals) -> Selection:
        """The encoder-stage drop with focus, on each image's projected tokens, by the encoder's scores (see
        ``LUVCConfig.focus``)."""
        c = self.config
        x = v.features
        images, n = x.shape[:2]
        (h, w), layers = v.grid, v.layers
        text = question_text(c.tokenizer, v.question_ids)
        parts = named_parts(text)
        first = part_cells(parts, h, w, x.device) if parts else None
        if self.stage == "llm":
            return self._rank(v, first, parts, text, c.start)
        if first is not None and c.hold > 0 and c.keep < 1.0 and c.keep * n <= int(first.sum()):
            return self._rank(v, first, parts, text, held_start(c.hold, c.keep, v.layers))
        # a named part keeps its own tokens whole: averaging the rest of the picture in measured worse (README)
        context = 0.0 if parts and c.contextual is None else self.contextual
        dominant, contextual = self._split(h, w, context) if c.keep < 1.0 else (n, 0)
        if c.keep < 1.0 and (v.scores is None or v.metric is None):
            raise RuntimeError("luvc's focus got no encoder scores from the runtime; this is a bug")
        idx, kept, sizes = spectral_drop(x, dominant, contextual, c.cutoff, first, scores=v.scores, metric=v.metric)
        k = idx.numel()
        cells = (idx + n * torch.arange(images, device=x.device)[:, None]).flatten()
        counts = [k] * (layers - 1) + [0 if c.final_zero and c.keep < 1.0 else k]
        info = {"focus": focus_label(parts, False), "question_text": text}
        return Selection(kept.flatten(0, 1), cells, sizes.flatten(), counts, info)

    def _rank(self, v: Visuals, first: Tensor | None, parts: list[str], text: str, start: int) -> Selection:
        """Focus at the language-model stage: every token enters; the decoder's drops (from ``start``) rank the
        named part's tokens first, each group by the layer's spectral score."""
        c = self.config
        x = v.features
        images, n = x.shape[:2]
        total = images * n
        counts = [total] * v.layers
        if c.keep < 1.0:
            mean = self._mean(c.keep * total, total, [v.grid] * images, v.layers, start)
            counts = cascade(total, v.layers, mean, c.shape, start, c.final_zero, c.every)
        cells = torch.arange(total, device=x.device)
        info = {"focus": focus_label(parts, False), "question_text": text}
        every = None if first is None else first.repeat(images)
        return Selection(x.flatten(0, 1), cells, torch.ones_like(cells), counts, info, every)

    def llm_counts(self, entering: int, original: int, layers: int) -> list[int]:
        c = self.config
        if c.keep == 1.0:
            return [entering] * layers
        if self.stage == "encoder":  # the encoder chose the count; only final_zero acts in the language model
            return [entering] * (layers - 1) + [0 if c.final_zero else entering]
        return cascade(entering, layers, c.keep * original, c.shape, c.start, c.final_zero, c.every)

    def context_counts(self, entering: int, original: int, images: list[tuple[int, int]], layers: int) -> list[int]:
        """``llm_counts`` with frozen context: the cascade lowered by what the context costs at most."""
        c = self.config
        if c.keep == 1.0:
            return [entering] * layers
        mean = self._mean(c.keep * original, entering, images, layers, c.start)
        return cascade(entering, layers, mean, c.shape, c.start, c.final_zero, c.every)

    def _lattice(self, images: list[tuple[int, int]], layers: int) -> int:
        """The stride of frozen context's lattice on ``images`` (see ``LUVCConfig.context_stride``)."""
        c = self.config
        if c.context_stride is not None:
            return c.context_stride
        start = c.start if self.stage == "llm" else held_start(c.hold, c.keep, layers)
        total = sum(h * w for h, w in images)
        kept = (c.keep * total * layers - start * total) / max(1, layers - start)  # per layer after the drop
        widest = max(max(h, w) for h, w in images)
        for stride in range(2, widest):
            if self.context_cost * lattice_size(images, stride) <= CONTEXT_SHARE * kept:
                return stride
        return max(2, widest)  # one token per image

    def _mean(self, budget: float, entering: int, images: list[tuple[int, int]], layers: int, start: int) -> float:
        """The mean visual tokens per layer a ``budget`` (tokens per layer) leaves once frozen context is paid for:
        at most the whole lattice, frozen from the first drop (``start``) on; all of it without frozen context."""
        if self.context_lattice is None:
            return budget
        reserve = self.context_cost * lattice_size(images, self._lattice(images, layers)) * (layers - start) / layers
        if budget - reserve < entering * start / layers:
            raise ValueError(
                f"frozen context's keys and values cost up to {reserve:.1f} tokens a layer, more than "
                f"keep={self.config.keep} leaves after carrying every token through {start} layers; raise keep or "
                "context_stride, or lower start"
            )
        return budget - reserve

    def _features(self, inputs: ScoreInput) -> Tensor:
        x = inputs.hidden
        norm = getattr(inputs.layer, "input_layernorm", None)
        if self.config.normed and norm is not None:
            x = norm(x)
        return x.float()

    def _fold(self, inputs: ScoreInput, scores: Tensor, count: int, size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        contextual = min(count, max(1, round(self.contextual * count)))
        return fold_rest(inputs.hidden, size, scores, self._features(inputs), count, contextual)

    def score(self, inputs: ScoreInput) -> Tensor:
        c = self.config
        x = self._features(inputs)
        if c.spectrum == "2d":
            scores = grid_scores(x, inputs.cells, inputs.images, c.cutoff, inputs.present)
        elif c.spectrum == "1d" and inputs.present is not None:
            scores = live_scores(x, inputs.present, c.cutoff)
        else:
            scores = highfreq_score(x, c.cutoff, axis="token" if c.spectrum == "1d" else "channel")
        scores = scores if c.prefer == "high" else -scores
        groups = round(c.coverage * (inputs.count or 0))
        if groups > 0:  # each block's best goes first: lifted above every other token, in its own score order
            present = inputs.cells if inputs.present is None else inputs.cells.masked_fill(~inputs.present, -1)
            best = best_per_group(scores, cell_groups(present, inputs.images, groups))
            scores = scores + best * (scores.max() - scores.min() + 1)
        return scores


def spectral_drop(
    x: Tensor,
    dominant: int,
    contextual: int,
    cutoff: float,
    first: Tensor | None = None,
    size: Tensor | None = None,
    scores: Tensor | None = None,
    metric: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """LUVC's drop on tokens ``x`` (B, N, D) in sequence order: the ``dominant`` of highest 1-D spectral score stay
    as they are, the rest are averaged onto ``contextual`` of them (grouped by likeness, as VisionZip groups its
    contextual tokens; weighted by ``size`` (B, N), the inputs each token already holds, default 1).
    ``scores`` (B, N) and ``metric`` (B, N, d): the scores and the features likeness is read from, when they come
    from elsewhere (the encoder's "score" step); default: those of ``x``.
    ``first`` (N,) bool: tokens ranked before every other (in their own score order).
    Returns (idx (B, k) ascending: the input token whose place each output takes, tokens (B, k, D), sizes (B, k))."""
    scores = highfreq_score(x.float(), cutoff) if scores is None else scores.float()
    if first is not None:
        scores = ahead(scores, first)
    if size is None:
        size = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
    if contextual:
        return fold_rest(x, size, scores, x if metric is None else metric, dominant + contextual, contextual)
    idx = topk_in_order(scores, dominant)
    return idx, gather_tokens(x, idx), size.gather(1, idx)


def held_start(hold: float, keep: float, layers: int) -> int:
    """The decoder layer of the drop with ``hold``: the most layers that share of a ``keep`` budget carries every
    token through (the margin only absorbs rounding of hold * keep * layers)."""
    return min(layers - 1, int(hold * keep * layers + 1e-9))


def live_scores(x: Tensor, present: Tensor, cutoff: float) -> Tensor:
    """The 1-D spectral score of each sample's tokens in slots that hold one (``present`` (B, n)), as that sample
    would score them alone; 0 at the others (a ragged batch's dark slots, whose states are not the sample's)."""
    out = x.new_zeros(present.shape)
    for i in range(x.shape[0]):
        out[i, present[i]] = highfreq_score(x[i : i + 1, present[i]], cutoff)[0]
    return out


def spectral_score(inputs: ScoreInput, cutoff: float) -> Tensor:
    """The 2D-grid spectral score of the layer's normalised input (LUVC with ``spectrum="2d"``), for methods that
    rank each image's tokens on its grid (pvc, lod, difficulty)."""
    x = inputs.hidden
    norm = getattr(inputs.layer, "input_layernorm", None)
    if norm is not None:
        x = norm(x)
    return grid_scores(x.float(), inputs.cells, inputs.images, cutoff, inputs.present)


def grid_scores(
    x: Tensor, cells: Tensor, images: list[tuple[int, int]], cutoff: float, present: Tensor | None = None
) -> Tensor:
    """Scores on each image's full grid: surviving tokens in their cells, pruned cells filled with the image mean.

    ``present`` (B, n) False marks slots that hold no token (a batch's padding when its samples keep different
    counts): they are left out of the means and the grids, and score 0.
    """
    b, n, d = x.shape
    sizes = [h * w for h, w in images]
    total = sum(sizes)
    slot = cells if present is None else torch.where(present, cells, total)  # absent slots go to one spare cell
    owner = torch.repeat_interleave(torch.arange(len(images) + 1, device=x.device), torch.tensor(sizes + [1]))
    img = owner[slot]  # (B, n) which image each token belongs to (the spare cell has an image of its own)
    sums = x.new_zeros(b, len(images) + 1, d).scatter_add_(1, img[..., None].expand(-1, -1, d), x)
    count = x.new_zeros(b, len(images) + 1).scatter_add_(1, img, torch.ones_like(img, dtype=x.dtype))
    mean = sums / count.clamp(min=1)[..., None]
    canvas = mean.gather(1, owner[None, :, None].expand(b, -1, d)).clone()
    canvas.scatter_(1, slot[..., None].expand(-1, -1, d), x)
    parts, offset = [], 0
    for (h, w), size in zip(images, sizes, strict=True):
        parts.append(highfreq_score(canvas[:, offset : offset + size], cutoff, grid=(h, w)))
        offset += size
    parts.append(x.new_zeros(b, 1))
    return torch.cat(parts, dim=1).gather(1, slot)
