"""The KV cache reaches the runtime under either of the names transformers has used (``past_key_values`` up to
5.23, ``cache`` from 5.24), so decoding after a pruned prefill goes through the runtime's loop on both."""

from __future__ import annotations

import inspect

import pytest
import torch
from transformers import LlamaModel

import tokenfunnel
from tiny import build, logits, pair, positions
from tokenfunnel.runtime.cache import CACHE, pop_cache


def test_the_name_is_the_one_the_installed_transformers_uses():
    assert CACHE in inspect.signature(LlamaModel.forward).parameters


@pytest.mark.parametrize("name", ["past_key_values", "cache"])
def test_pop_cache_takes_either_name_out_of_the_kwargs(name):
    kwargs = {name: "the cache", "use_cache": True}
    assert pop_cache(kwargs) == "the cache" and kwargs == {"use_cache": True}
    assert pop_cache({}) is None


def test_both_names_at_once_are_refused():
    with pytest.raises(ValueError, match="pass the KV cache once"):
        pop_cache({"past_key_values": 1, "cache": 2})


def test_a_step_after_a_pruned_prefill_decodes_through_the_runtime_under_the_installed_name():
    """A step fed the pruned cache must attend what each layer kept, masked as the prefill left it; the same step
    through the unpatched forward would read a cache it cannot mask (and is what a missed cache name ran)."""
    model = build()
    together, _ = pair()
    fed = torch.tensor([[5], [20]])
    full = dict(together)
    full["input_ids"] = torch.cat([together["input_ids"], fed], dim=1)
    full["attention_mask"] = torch.cat([together["attention_mask"], torch.ones_like(fed)], dim=1)
    mask = together["attention_mask"]
    with tokenfunnel.compress(model, "luvc", keep=0.25), torch.no_grad():
        one_pass = logits(model, full)[:, -1]
        out = model(**together, position_ids=positions(mask), use_cache=True)
        step = model(
            input_ids=fed,
            attention_mask=full["attention_mask"],
            position_ids=mask.sum(-1, keepdim=True),
            use_cache=True,
            **{CACHE: getattr(out, CACHE)},
        ).logits[:, -1]
    torch.testing.assert_close(step, one_pass, atol=1e-4, rtol=0)
