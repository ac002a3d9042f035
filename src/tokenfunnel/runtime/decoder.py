"""The decoder loop of a compressed language model: prunes visual tokens between layers during prefill.

Every layer sees only the tokens that survive to it and writes only those to its KV cache, so layers hold caches
of different lengths; decoding continues against those caches with the positions the unpruned sequence would
have. Tokens keep their original RoPE positions (2D ``(B, T)`` or M-RoPE ``(3, B, T)``). Pruning reads hidden
states only, never attention weights, so SDPA and FlashAttention run unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast

from tokenfunnel.ops.lattice import lattice
from tokenfunnel.ops.select import first_then, gather_tokens, keep_mask, topk_in_order
from tokenfunnel.runtime.cache import CACHE
from tokenfunnel.runtime.clock import ours
from tokenfunnel.runtime.context import Ahead, Frozen, context_allowed, freeze, keys_values
from tokenfunnel.runtime.state import Layout, Plan, Record, ScoreInput


@dataclass
class CacheBook:
    """What decoding against a pruned prefill cache needs to know about it."""

    lengths: list[int]  # tokens each layer cached during prefill
    valid: list[Tensor]  # per layer (B, length) False where the cached token is padding
    next_position: Tensor  # (B,) or (3, B): the position after each sample's unpruned prompt


def _take(pos: Tensor, idx: Tensor) -> Tensor:
    """Gather positions (B, T) or (3, B, T) at per-sample indices (B, k)."""
    if pos.dim() == 2:
        return pos.gather(1, idx)
    return pos.gather(2, idx.unsqueeze(0).expand(pos.shape[0], -1, -1))


def _mask(impl: str, valid: Tensor, q: int, dtype: torch.dtype) -> Tensor | None:
    """Mask for ``q`` queries that are the last q of ``valid`` (B, k) keys, causal among themselves.

    None where the attention kernel's own causal path is exact (no padding, and square or single-query).
    """
    b, k = valid.shape
    if bool(valid.all()) and (q == k or q == 1) and impl != "eager":
        return None
    if impl.startswith("flash"):
        if q != k and q != 1:
            raise NotImplementedError("FlashAttention cannot attend several new tokens to a pruned cache; use sdpa")
        return valid.long()  # FlashAttention integrations take a 2D padding mask
    return _cast(impl, _allowed(valid, q), dtype)


def _allowed(valid: Tensor, q: int) -> Tensor:
    """(B, 1, q, k) bool: the last ``q`` of ``valid`` (B, k) keys attend the valid keys up to themselves."""
    k = valid.shape[1]
    rows = torch.arange(k - q, k, device=valid.device)[:, None]
    allowed = valid[:, None, None, :] & (torch.arange(k, device=valid.device) <= rows)
    allowed |= torch.arange(k, device=valid.device) == rows  # a padded query still attends itself: no empty rows
    return allowed


def _cast(impl: str, allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean mask in the form ``impl`` takes it (sdpa: as is; eager: additive)."""
    if impl == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _layer_positions(pos: Tensor) -> Tensor | None:
    # layers only read positions for FlashAttention's packed-sequence detection; M-RoPE models pass None there
    return pos if pos.dim() == 2 else None


def _impl(model) -> str:
    return getattr(model.config, "_attn_implementation", None) or "eager"


def prefill(
    model, plan: Plan, layout: Layout, record: Record, embeds: Tensor, mask: Tensor, positions: Tensor, cache, use_cache
) -> tuple[BaseModelOutputWithPast, CacheBook | None]:
    """Run ``model`` (a decoder-only text model) over ``embeds`` (B, T, D), pruning visual tokens per ``plan``."""
    b, t, _ = embeds.shape
    layers = model.layers[: model.config.num_hidden_layers]
    visual = layout.visual
    lattice_of = getattr(plan, "context_lattice", None)  # frozen context: every stride-th row and column of a drop
    stride = None if lattice_of is None else lattice_of(layout.images, len(layers))
    impl = _impl(model)
    if stride is not None and impl.startswith("flash"):
        raise ValueError(
            "frozen context lets only the visual tokens see the frozen ones, a mask FlashAttention cannot take; load "
            "the model with attn_implementation='sdpa', or use context='none'"
        )
    entering = int(visual[0].sum())
    valid = mask.bool()
    # visual slots that hold a token; only a temporal stage leaves empty ones (padding samples to one count)
    live = valid.gather(1, visual.nonzero()[:, 1].view(b, -1))
    if layout.schedules is not None:  # a select stage chose each sample's counts
        per = torch.tensor(layout.schedules, device=embeds.device)
        ragged = bool((per != per[0]).any()) or not bool(live.all())
        counts = per.max(dim=0).values.tolist() if ragged else list(layout.schedules[0])
    else:
        ragged = layout.cells is not None and not bool(live.all())
        counts, per = _counts(plan, live, layout.original, len(layers)) if ragged else (None, None)
        if not ragged:
            counts = (
                plan.llm_counts(entering, layout.original, len(layers)) if stride is None
                else plan.context_counts(entering, layout.original, layout.images, len(layers))
            )  # fmt: skip
        elif stride is not None:
            raise ValueError(
                "frozen context cannot run a batch whose samples bring different numbers of visual tokens to the "
                "language model; run the samples one by one"
            )
    if use_cache and cache is None:
        cache = DynamicCache(config=model.config)
    fold = getattr(plan, "fold", None)  # a plan that folds the tokens it drops into some it keeps
    if fold is not None and ragged:
        raise ValueError(
            f"{getattr(plan, 'name', 'this method')} folds dropped tokens only when every sample keeps the same "
            "count; run the samples one by one"
        )
    size = torch.ones(b, entering, dtype=torch.long, device=embeds.device) if fold is not None else None
    now_visual = visual  # (B, T_now): which tokens of the current sequence are visual
    kept = layout.cells if layout.cells is not None else torch.arange(entering, device=embeds.device).expand(b, -1)
    hidden, pos = embeds, positions
    order = torch.arange(t, device=embeds.device).expand(b, -1)  # each token's index in the given sequence
    frozen: Frozen | None = None
    frozen_rope = None
    attn = _mask(impl, valid, t, embeds.dtype)
    rope = model.rotary_emb(hidden, position_ids=pos)
    book = CacheBook([], [], positions.max(-1).values + 1 if layout.next_position is None else layout.next_position)
    record.llm_visual_tokens, record.kept_cells, record.context_cells = [], [], []
    record.context_cost = plan.context_cost if stride is not None else None  # what the plan's budget paid per token
    entered = []  # per layer, (B,) live visual tokens entering it
    for i, layer in enumerate(layers):
        thin = ragged and bool((live.sum(1) > per[:, i]).any())  # a sample falls below its own count here
        if counts[i] < kept.shape[1] or thin:
            with ours():
                at = now_visual.nonzero()[:, 1].view(b, -1)  # where the visual tokens sit in the current sequence
                inputs = ScoreInput(
                    gather_tokens(hidden, at), kept, layout.images, layer, i, hidden, at, valid, rope,
                    live if ragged else None, counts[i],
                )  # fmt: skip
                scores = plan.score(inputs)
                if layout.first is not None:
                    scores = first_then(scores, layout.first.gather(1, kept.clamp(min=0)) & (kept >= 0))
                if ragged:
                    scores = scores.masked_fill(~live, float("-inf"))
                if fold is not None and 0 < counts[i] < kept.shape[1]:
                    chosen, merged, size = fold(inputs, scores, counts[i], size)
                    hidden = hidden.scatter(1, at.gather(1, chosen)[..., None].expand_as(merged), merged)
                else:
                    chosen = topk_in_order(scores, counts[i])
                    size = size.gather(1, chosen) if size is not None else None
                drop = torch.ones_like(now_visual)
                drop.scatter_(1, at.gather(1, chosen), False)
                stays = keep_mask(chosen, kept.shape[1])  # (B, n) the visual tokens each sample keeps
                if ragged:  # each sample keeps its own count; the batch's slots past it stay, dark
                    rank = scores.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
                    stays = rank < per[:, i : i + 1]
                if stride is not None:  # the dropped tokens on the lattice stay on as frozen context
                    # a token that goes dark here leaves its sample as one dropped alone would: frozen too
                    gone = ~stays & lattice(kept, layout.images, stride)
                    gone &= live if ragged else True
                    cells = torch.full_like(order, -1).scatter(1, at, kept)
                    frozen = freeze(frozen, hidden, order, pos, cells, torch.zeros_like(drop).scatter(1, at, gone))
                    frozen_rope = model.rotary_emb(frozen.states, position_ids=frozen.positions)
                keep = (~(now_visual & drop)).nonzero()[:, 1].view(b, -1)
                hidden, pos, valid = gather_tokens(hidden, keep), _take(pos, keep), valid.gather(1, keep)
                order = order.gather(1, keep)
                now_visual, kept = now_visual.gather(1, keep), kept.gather(1, chosen)
                if ragged:
                    live = stays.gather(1, chosen)
                    valid = valid.scatter(1, now_visual.nonzero()[:, 1].view(b, -1), live)
                if frozen is None:
                    attn = _mask(impl, valid, hidden.shape[1], hidden.dtype)
                else:  # the frozen keys go ahead of the layer's own (``Ahead``)
                    seen = context_allowed(frozen, now_visual, order)
                    attn = _cast(impl, torch.cat([seen, _allowed(valid, hidden.shape[1])], dim=-1), hidden.dtype)
                rope = model.rotary_emb(hidden, position_ids=pos)
        entered.append(live.sum(1) if ragged else None)
        record.llm_visual_tokens.append(kept.shape[1])
        record.kept_cells.append(kept.masked_fill(~live, -1) if ragged else kept)
        book.lengths.append(hidden.shape[1])
        book.valid.append(valid)
        here = cache
        if frozen is not None:
            with ours():
                here = Ahead(cache, *keys_values(layer, frozen.states, frozen_rope))
        record.context_cells.append(frozen.cells if frozen is not None else None)
        hidden = layer(
            hidden,
            attention_mask=attn,
            position_ids=_layer_positions(pos),
            **{CACHE: here},
            use_cache=use_cache,
            position_embeddings=rope,
        )
    if ragged:  # one list per sample, as each would report alone
        record.llm_visual_tokens = torch.stack(entered, dim=1).tolist()
    hidden = model.norm(hidden)
    return BaseModelOutputWithPast(last_hidden_state=hidden, **{CACHE: cache}), (book if use_cache else None)


def _counts(plan: Plan, live: Tensor, original: int, layers: int) -> tuple[list[int], Tensor]:
    """For samples entering with different counts: each sample's own schedule (B, layers), and the batch's
    (the largest per layer), which sets how many slots the batch carries."""
    if not getattr(plan, "ragged", False):
        raise ValueError(
            f"{getattr(plan, 'name', 'this method')} cannot run a batch whose samples bring different numbers of "
            "visual tokens; run the samples one by one"
        )
    per = torch.tensor([plan.llm_counts(int(n), original, layers) for n in live.sum(1)], device=live.device)
    return per.max(dim=0).values.tolist(), per


def decode(model, book: CacheBook, embeds: Tensor, positions: Tensor | None, cache) -> BaseModelOutputWithPast:
    """Continue from a pruned prefill cache: ``embeds`` (B, q, D) attend every token each layer kept."""
    b, q, _ = embeds.shape
    layers = model.layers[: model.config.num_hidden_layers]
    impl = _impl(model)
    done = cache.layers[0].get_seq_length() - book.lengths[0]  # tokens decoded since prefill (crop-aware)
    if positions is None:
        step = torch.arange(done, done + q, device=embeds.device)
        positions = book.next_position[..., None] + step
    rope = model.rotary_emb(embeds, position_ids=positions)
    hidden = embeds
    for i, layer in enumerate(layers):
        extra = cache.layers[i].get_seq_length() - book.lengths[i] + q
        valid = torch.cat([book.valid[i], book.valid[i].new_ones(b, extra)], dim=1)
        attn = _mask(impl, valid, q, hidden.dtype)
        hidden = layer(
            hidden,
            attention_mask=attn,
            position_ids=_layer_positions(positions),
            **{CACHE: cache},
            use_cache=True,
            position_embeddings=rope,
        )
    return BaseModelOutputWithPast(last_hidden_state=model.norm(hidden), **{CACHE: cache})
