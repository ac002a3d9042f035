"""LUVC's frozen context (``context="frozen"``): the dropped tokens on a lattice stay on as keys and values for the
visual tokens that remain. It must equal the plain way of doing it (every token runs every layer, the frozen ones'
states reset after each layer, a mask that shows them to the kept visual tokens only), project each family's keys as
its own layers do, keep=1 exact, padded batches equal their samples, and the budget pays for the context."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicCache

import tokenfunnel
from adapters import test_idefics3, test_internvl, test_qwen2_vl
from tiny import GRID, IMAGE_TOKEN, PATCHES, Said, assert_rows_match_alone, build, generate, logits, pair, prompt
from tokenfunnel import LUVCConfig
from tokenfunnel.adapters import adapter_for
from tokenfunnel.methods.luvc import FOCUS_HOLD, LUVC, held_start
from tokenfunnel.ops.lattice import lattice, lattice_size
from tokenfunnel.runtime.cache import CACHE
from tokenfunnel.runtime.context import keys_values
from tokenfunnel.runtime.patch import MARK
from tokenfunnel.viz.kept import kept_figure

LAYERS = 6  # decoder layers of the tiny LLaVA
FLAT = dict(stage="llm", start=1, context="frozen")  # one drop after the first layer (and a rounding one later)
FALLING = dict(stage="llm", start=1, shape="linear", context="frozen")  # a drop before every layer from the second


def on_lattice(cell: int, stride: int) -> bool:
    return cell // GRID[1] % stride == 0 and cell % GRID[1] % stride == 0


def by_hand(model, inputs: dict, kept: list[list[int]], stride: int) -> torch.Tensor:
    """The last logits of one prompt with every token through every layer: a token dropped before layer i is hidden
    from every query from then on, except one on the lattice, which keeps the state it entered layer i with and is
    seen by the visual tokens still kept (causally)."""
    lm = model.model.language_model
    got = {}
    hook = lm.register_forward_pre_hook(lambda module, args, kwargs: got.update(kwargs), with_kwargs=True)
    logits(model, inputs)  # uncompressed: the language model's input as the compressed run gets it
    hook.remove()
    h, pos = got["inputs_embeds"], got["position_ids"]
    at = (inputs["input_ids"][0] == IMAGE_TOKEN).nonzero()[:, 0]
    t = h.shape[1]
    rope = lm.rotary_emb(h, position_ids=pos)
    alive, frozen = torch.ones(t, dtype=torch.bool), {}
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    previous = set(range(PATCHES))
    with torch.no_grad():
        for i, layer in enumerate(lm.layers):
            for cell in previous - set(kept[i]):
                alive[at[cell]] = False
                if on_lattice(cell, stride):
                    frozen[int(at[cell])] = h[0, at[cell]].clone()
            previous = set(kept[i])
            visual = torch.zeros(t, dtype=torch.bool)
            visual[at[sorted(previous)]] = True
            seen = torch.zeros(t, dtype=torch.bool)
            seen[list(frozen)] = True
            allowed = causal & (alive[None, :] | (seen[None, :] & visual[:, None])) | torch.eye(t, dtype=torch.bool)
            h = layer(h, attention_mask=allowed[None, None], position_ids=pos, position_embeddings=rope)
            for j, state in frozen.items():
                h[0, j] = state
        return model.lm_head(lm.norm(h))[0, -1]


@pytest.mark.parametrize("options", [FLAT, FALLING], ids=["flat", "falling"])
@pytest.mark.parametrize("stride", [1, 2])
def test_it_equals_running_every_token_with_the_frozen_states_reset_after_each_layer(options, stride):
    model = build()
    inputs = prompt()
    keep = 0.25 if stride == 2 else 0.5  # the whole grid's keys and values cost more than keep 0.25 leaves here
    with tokenfunnel.compress(model, "luvc", keep=keep, context_stride=stride, **options) as handle:
        out = logits(model, inputs)[0, -1]
        report = handle.report()
    kept = [layer[0] for layer in report["kept"]]
    torch.testing.assert_close(out, by_hand(model, inputs, kept, stride), atol=2e-5, rtol=2e-5)
    # and the frozen tokens matter: the same kept tokens without them give other logits
    with tokenfunnel.compress(model, "luvc", keep=keep, **{**options, "context": "none"}):
        plain = logits(model, inputs)[0, -1]
    assert not torch.allclose(out, plain, atol=1e-3)


def test_report_counts_each_frozen_token_at_its_share_and_the_budget_pays_for_them():
    model = build()
    with tokenfunnel.compress(model, "luvc", keep=0.25, **FLAT) as handle:
        logits(model, prompt())
        report = handle.report()
    kept = [set(layer[0]) for layer in report["kept"]]
    # the dropped lattice cells, none before the first layer (nothing is dropped there)
    context = [set()] + [{c for c in set(range(PATCHES)) - k if on_lattice(c, 2)} for k in kept[1:]]
    frozen = [len(cells) for cells in context]
    assert report["llm_context_tokens"] == frozen
    assert [set(layer[0]) for layer in report["context"]] == context
    cost = report["context_cost"]
    layer = model.model.language_model.layers[0]
    kv = layer.self_attn.k_proj.weight.numel() + layer.self_attn.v_proj.weight.numel()
    linear = sum(m.weight.numel() for m in layer.modules() if isinstance(m, torch.nn.Linear))
    assert cost == pytest.approx(kv / linear, abs=1e-6)
    visual = report["llm_visual_tokens"]
    assert report["keep"] == pytest.approx((sum(visual) + cost * sum(frozen)) / (PATCHES * LAYERS), abs=1e-6)
    # the cascade is lowered by the whole lattice's cost from the drop on: at most the asked keep (but for rounding
    # the total to a whole token), and within a token a layer of it
    assert 0.25 - 1 / PATCHES <= report["keep"] <= 0.25 + 0.5 / (PATCHES * LAYERS)
    reserve = cost * lattice_size([GRID], 2) * (LAYERS - 1)
    assert sum(visual) == round(0.25 * PATCHES * LAYERS - reserve)


def test_keep_one_is_exact_a_padded_batch_equals_its_samples_and_remove_restores():
    model = build()
    together, alone = pair()
    ref, ref_gen = logits(model, together), generate(model, together)
    with tokenfunnel.compress(model, "luvc", keep=1.0, **FLAT):
        assert torch.equal(logits(model, together), ref) and torch.equal(generate(model, together), ref_gen)
    # FLAT freezes twice (its rounding drop is a second one); FALLING's last drops tie to float noise on this model,
    # with or without frozen context, so a batch and a sample may keep different tokens there
    with tokenfunnel.compress(model, "luvc", keep=0.25, **FLAT) as handle:
        last, gen = logits(model, together)[:, -1], generate(model, together)
        report = handle.report()
        assert_rows_match_alone(model, alone, last, gen)
    assert torch.equal(logits(model, together), ref) and not hasattr(model, MARK)
    frozen = report["llm_context_tokens"]
    assert len(report["keep_per_sample"]) == 2 and frozen[0] != frozen[1] and frozen[1][-1] > frozen[1][1]


def test_eager_attention_gives_the_sdpa_results():
    inputs = prompt()
    out = {}
    for attn in ("sdpa", "eager"):
        model = build(attn=attn)
        with tokenfunnel.compress(model, "luvc", keep=0.25, **FALLING):
            out[attn] = logits(model, inputs)[0, -1]
    torch.testing.assert_close(out["eager"], out["sdpa"], atol=1e-4, rtol=1e-4)


def test_with_focus_and_hold_the_named_part_goes_first_and_the_rest_of_the_lattice_stays_as_context():
    model = build()
    said = Said("In the top-left picture, what shape is there?")
    with tokenfunnel.compress(model, "luvc-focus", keep=0.25, tokenizer=said, context="frozen") as handle:
        logits(model, prompt())
        report = handle.report()
    quarter = {r * GRID[1] + c for r in range(GRID[0] // 2) for c in range(GRID[1] // 2)}
    assert set(report["kept"][1][0]) < quarter and max(report["llm_context_tokens"]) > 0
    assert report["keep"] <= 0.25 + 0.5 / (PATCHES * LAYERS)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(context="warm"), "context must be one of"),
        (dict(context="frozen", context_stride=0), "context_stride must be >= 1"),
        (dict(context="frozen", stage="encoder"), "stage='llm'"),
        (dict(context="frozen", stage="llm", contextual=0.2), "pick one"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        tokenfunnel.compress(build(), "luvc", keep=0.25, **options)


def test_refusals_at_compress_and_at_run_leave_nothing_patched():
    model = build()
    with pytest.raises(ValueError, match="drops after the encoder"):  # auto is the encoder stage on LLaVA
        tokenfunnel.compress(model, "luvc", keep=0.25, context="frozen")
    assert not hasattr(model, MARK)
    with tokenfunnel.compress(model, "luvc", keep=0.25, stage="llm", start=1, context="frozen", context_stride=1):
        with pytest.raises(ValueError, match="raise keep or context_stride"):
            logits(model, prompt())
    assert not hasattr(model, MARK)


def test_lattice_marks_every_stride_th_row_and_column_of_each_image():
    images = [(3, 4), (2, 2)]
    cells = torch.tensor([[0, 1, 2, 4, 8, 10, 12, 13, 14, 15, -1]])
    got = lattice(cells, images, 2)[0].tolist()
    # image 1 (3x4): cells 0, 2, 8, 10 are on rows 0/2 and columns 0/2; image 2 starts at 12: only its cell 0 (12)
    assert got == [True, False, True, False, True, True, True, False, False, False, False]
    assert lattice_size(images, 2) == 4 + 1 and lattice_size(images, 1) == 16


def _text_layers(model):
    text = adapter_for(model).text_model
    return text, text.layers[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: build(),
        lambda: test_qwen2_vl.build("qwen2_vl"),
        lambda: test_qwen2_vl.build("qwen2_5_vl"),
        lambda: test_idefics3.build("idefics3"),
        lambda: test_internvl.build(),
    ],
    ids=["llava", "qwen2_vl", "qwen2_5_vl", "idefics3", "internvl"],
)
def test_every_family_projects_frozen_keys_and_values_as_its_layer_caches_them(make):
    text, layer = _text_layers(make())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, text.config.hidden_size, generator=g)
    pos = torch.randint(0, 40, (2, 5), generator=g)
    if type(text).__name__.startswith("Qwen2_5_VL") or type(text).__name__.startswith("Qwen2VL"):
        pos = torch.randint(0, 40, (3, 2, 5), generator=g)  # M-RoPE: (temporal, height, width) positions differ
    rope = text.rotary_emb(x, position_ids=pos)
    cache = DynamicCache(config=text.config)
    with torch.no_grad():
        layer(x, attention_mask=None, position_embeddings=rope, use_cache=True, **{CACHE: cache})
        keys, values = keys_values(layer, x, rope)
    torch.testing.assert_close(keys, cache.layers[0].keys, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(values, cache.layers[0].values, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("family", test_qwen2_vl.FAMILIES)
def test_m_rope_families_batch_as_their_samples_alone(family):
    model = test_qwen2_vl.build(family)
    a, b = test_qwen2_vl.A, test_qwen2_vl.B
    options = dict(keep=0.4, stage="llm", start=1, context="frozen")  # 4 layers: 0.25 only pays the first
    with torch.no_grad(), tokenfunnel.compress(model, "luvc", **options) as handle:
        alone = [model(**test_qwen2_vl._batch(p)).logits[0, -1] for p in (a, b)]
        together = model(**test_qwen2_vl._batch(a, b)).logits[:, -1]
        report = handle.report()
    torch.testing.assert_close(together, torch.stack(alone), atol=1e-4, rtol=1e-4)
    assert max(max(f) for f in report["llm_context_tokens"]) > 0
    assert report["keep"] <= 0.4 + 0.5 / (32 * 4)  # but for rounding the total to a whole token


@pytest.mark.parametrize("keep, stride", [(0.25, 2), (0.11, 4), (0.05, 6)])
def test_the_auto_lattice_is_the_densest_whose_keys_and_values_cost_at_most_a_sixth_of_the_tokens_kept(keep, stride):
    # the bundled VLM's shape: a 16 x 16 grid, 30 layers, a frozen token at 1/16 of a token; hold at 2/3 of the
    # budget carries every token through int(20 * keep) layers (5 at 0.25, 2 at 0.11, 1 at 0.05)
    plan = LUVC(
        LUVCConfig(keep=keep, focus=True, hold=FOCUS_HOLD, tokenizer=Said("?"), context="frozen", context_stride=None)
    )
    plan.stage, plan.context_cost = "encoder", 1 / 16
    start = held_start(FOCUS_HOLD, keep, 30)
    kept = (keep * 256 * 30 - start * 256) / (30 - start)
    assert plan.context_lattice([(16, 16)], 30) == stride
    assert lattice_size([(16, 16)], stride) / 16 <= kept / 6 < lattice_size([(16, 16)], stride - 1) / 16


def test_the_picture_tints_the_frozen_context():
    model = build()
    with tokenfunnel.compress(model, "luvc", keep=0.25, **FLAT) as handle:
        logits(model, prompt())
        report = handle.report()
    fig = kept_figure(np.zeros((4 * GRID[0], 4 * GRID[1], 3)), report, layers=[0, LAYERS - 1])
    first, last = (ax.get_title() for ax in fig.axes[1:])
    assert first.endswith(f"{PATCHES} tokens")  # nothing is frozen before the first drop
    assert last.endswith(f"{report['llm_visual_tokens'][-1]} tokens + {report['llm_context_tokens'][-1]} frozen")
    assert "amber: frozen context" in fig._suptitle.get_text()
