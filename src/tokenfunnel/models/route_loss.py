"""An auxiliary training loss that teaches the bundled VLM's LM to look at the mosaic tile a question names.

Why: trained on answers alone, the LM never learnt which of its 256 visual tokens belong to "the top-left
picture" (v2 answers about a random tile; 100 more steps of the same changed nothing), although a linear probe
reads each token's quadrant from the frozen features at 0.996. The answer loss only rewards routing once the
tile is also read well, and the tile is only read well once routed: neither gradient gets going. This loss
supervises the routing directly: at a few decoder layers, the attention that the token predicting the answer
pays *among the visual tokens* (softmax over the visual keys only, so attention sinks and text are untouched)
should fall on the named tile's tokens. It is ``-log`` of the head-averaged share on the named tile.

Recomputed by hand from each layer's own q/k projections (the LoRA hooks on them run), like FastV's query row
(``ops.attention``), so the model's SDPA path is untouched. Training only: nothing of it is saved.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tokenfunnel.data import easyvqa
from tokenfunnel.ops.attention import _heads, _rope


def named_tile(question: str) -> int | None:
    """The tile index (reading order) a mosaic question names, or None for a single-image question."""
    for index, tile in enumerate(easyvqa.TILES):
        if question.startswith(easyvqa.tile_question(tile, "")):
            return index
    return None


def quadrant_mask(side: int) -> Tensor:
    """(4, side*side) bool: which tokens of a row-major side x side grid lie in each tile of a 2x2 mosaic."""
    index = torch.arange(side * side)
    quadrant = (index // side >= side // 2).long() * 2 + (index % side >= side // 2).long()
    return quadrant[None] == torch.arange(4)[:, None]


class RouteLoss:
    """Hooks on ``layers`` of ``lm``; ``arm`` before a forward, ``take`` after it for the mean loss."""

    def __init__(self, lm: nn.Module, layers: list[int], side: int) -> None:
        self.masks = quadrant_mask(side)
        self.armed: tuple[Tensor, Tensor, Tensor, int] | None = None
        self.terms: list[Tensor] = []
        self.hooks = [lm.layers[i].register_forward_pre_hook(self._hook, with_kwargs=True) for i in layers]

    def arm(self, rows: Tensor, tokens: Tensor, tiles: Tensor, visual_start: int) -> None:
        """Query tokens (``rows``, ``tokens``) and the tile each should attend to; visual tokens start at the
        same index in every row (one prompt prefix, right padding)."""
        self.armed = (rows, tokens, tiles, visual_start) if len(rows) else None
        self.terms = []

    def take(self) -> tuple[Tensor | None, float]:
        """The loss averaged over the hooked layers (None when nothing was armed) and the mean share."""
        terms, self.armed, self.terms = self.terms, None, []
        if not terms:
            return None, 0.0
        losses = torch.stack(terms)
        share = math.exp(-losses.detach().mean().item())
        return losses.mean(), share

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()

    def _hook(self, layer: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.armed is None:
            return
        rows, tokens, tiles, start = self.armed
        hidden = args[0] if args else kwargs["hidden_states"]
        b = hidden.shape[0]
        cos, sin = (x.expand(b, -1, -1) for x in kwargs["position_embeddings"])  # batch 1 when positions are shared
        heads, kv, head_dim = _heads(layer)
        visual = self.masks.shape[1]
        normed = layer.input_layernorm(hidden)
        q = layer.self_attn.q_proj(normed[rows, tokens]).view(len(rows), 1, heads, head_dim).transpose(1, 2)
        q = _rope(q, cos[rows, tokens][:, None], sin[rows, tokens][:, None])  # (n, H, 1, d)
        span = slice(start, start + visual)
        k = layer.self_attn.k_proj(normed[:, span]).view(b, visual, kv, head_dim).transpose(1, 2)
        k = _rope(k, cos[:, span], sin[:, span]).repeat_interleave(heads // kv, dim=1)[rows]  # (n, H, V, d)
        weights = ((q @ k.transpose(-1, -2)) / math.sqrt(head_dim)).squeeze(2).softmax(-1)  # (n, H, V)
        share = (weights * self.masks[tiles][:, None].to(weights.dtype)).sum(-1).mean(1)
        self.terms.append(-torch.log(share.clamp_min(1e-6)).mean())
