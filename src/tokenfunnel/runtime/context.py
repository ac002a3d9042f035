"""Frozen context: visual tokens a drop takes out of the sequence stay on as keys and values for the visual tokens
that remain, at a fraction of a token's cost.

A frozen token's state stops at the layer that dropped it; each later layer only projects its keys and values (its
input norm, ``k_proj``, ``v_proj`` and RoPE at the token's own position), never its query, attention or MLP. The
layer's attention gets those keys and values ahead of its own tokens' (``Ahead``); the KV cache keeps only its own
tokens', so text and decoding never see the frozen ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tokenfunnel.ops.select import gather_tokens


@dataclass
class Frozen:
    """The frozen tokens of a batch, padded to the most any sample has."""

    states: Tensor  # (B, F, D) hidden states as the dropping layer received them
    order: Tensor  # (B, F) index in the sequence the language model was given (causality)
    positions: Tensor  # (B, F) or (3, B, F) RoPE positions
    cells: Tensor  # (B, F) the input cell each stands for (as ``Layout.cells``), -1 at padding

    @property
    def valid(self) -> Tensor:
        """(B, F) False at padding."""
        return self.cells >= 0


def freeze(frozen: Frozen | None, hidden: Tensor, order: Tensor, pos: Tensor, cells: Tensor, take: Tensor) -> Frozen:
    """``frozen`` with the tokens ``take`` (B, T) marks in the current sequence added (``hidden`` (B, T, D), ``order``
    (B, T), ``pos`` (B, T) or (3, B, T), ``cells`` (B, T) the input cell of each, -1 off the visual tokens; every
    token taken has one)."""
    m = int(take.sum(1).max())
    idx = (~take).to(torch.uint8).argsort(dim=1, stable=True)[:, :m]  # each sample's taken tokens first, in order
    at = idx if pos.dim() == 2 else idx.unsqueeze(0).expand(pos.shape[0], -1, -1)
    taken = cells.gather(1, idx).masked_fill(~take.gather(1, idx), -1)
    new = Frozen(gather_tokens(hidden, idx), order.gather(1, idx), pos.gather(-1, at), taken)
    if frozen is None:
        return new
    return Frozen(
        torch.cat([frozen.states, new.states], dim=1), torch.cat([frozen.order, new.order], dim=1),
        torch.cat([frozen.positions, new.positions], dim=-1), torch.cat([frozen.cells, new.cells], dim=1),
    )  # fmt: skip


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE as the supported families apply it to keys (halves rotated), with (B, F, head_dim) cos/sin."""
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.unsqueeze(1) + turned * sin.unsqueeze(1)


def keys_values(layer: nn.Module, states: Tensor, rope: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The keys and values (B, kv_heads, F, head_dim) decoder ``layer`` gives tokens of ``states`` (B, F, D) at the
    positions ``rope`` (cos, sin) encodes, as its attention would cache them."""
    attn = layer.self_attn
    x = layer.input_layernorm(states)
    shape = (*x.shape[:-1], -1, attn.head_dim)
    keys = attn.k_proj(x).view(shape).transpose(1, 2)
    values = attn.v_proj(x).view(shape).transpose(1, 2)
    return _rotate(keys, *rope), values


def check_layer(layer: nn.Module) -> None:
    """Refuse a decoder layer whose keys frozen context cannot project as the layer does."""
    attn = getattr(layer, "self_attn", None)
    needs = ("k_proj", "v_proj", "head_dim")
    if attn is None or not hasattr(layer, "input_layernorm") or not all(hasattr(attn, n) for n in needs):
        raise ValueError(
            f"frozen context projects keys and values as a Llama-style decoder layer does ({type(layer).__name__} is "
            "not one); use context='none'"
        )
    if hasattr(attn, "k_norm") or hasattr(attn, "q_norm"):
        raise ValueError(f"frozen context does not handle the key norm of {type(attn).__name__}; use context='none'")


def kv_share(layer: nn.Module) -> float:
    """A frozen token's cost in one layer, as a share of a full token's: the multiply-adds of its key and value
    projections over those of every linear map in the layer (attention scores, which depend on length, aside)."""
    attn = layer.self_attn
    part = attn.k_proj.weight.numel() + attn.v_proj.weight.numel()
    whole = sum(m.weight.numel() for m in layer.modules() if isinstance(m, nn.Linear))
    return part / whole


class Ahead:
    """The cache a layer's attention is handed while frozen tokens are about: their keys and values go ahead of the
    layer's own, which alone reach the real cache (None when the forward keeps none)."""

    def __init__(self, cache, keys: Tensor, values: Tensor) -> None:
        self.cache, self.keys, self.values = cache, keys, values

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args, **kwargs):
        if self.cache is not None:
            key_states, value_states = self.cache.update(key_states, value_states, layer_idx, *args, **kwargs)
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


def context_allowed(frozen: Frozen, visual: Tensor, order: Tensor) -> Tensor:
    """(B, 1, T, F): which frozen keys each of the T current tokens may attend: the visual ones, the keys before them
    in the sequence."""
    seen = frozen.valid[:, None, :] & (frozen.order[:, None, :] < order[:, :, None]) & visual[:, :, None]
    return seen[:, None]
