"""Correctness guards of LUVC on tiny random LLaVAs: exactness where nothing is compressed, exact undo, per-instance
patching, padded batches, generate() and cached scoring against pruned caches, and report() bookkeeping.
"""

from __future__ import annotations

import pytest
import torch

import tokenfunnel
from tiny import GRID, PATCHES, SHORT, batch, build, generate, logits, pair, positions, prompt, sample_ids
from tokenfunnel.runtime.patch import MARK

SPLIT = dict(grid_keep=None, shape="linear", final_zero=True)  # OIM, then a cascade to zero (the paper's design)
FOLD = dict(contextual=0.25, shape="linear", stage="llm", final_zero=True)  # dropped tokens folded, every layer
COVER = dict(coverage=1.0, shape="linear", stage="llm", final_zero=True)  # one token per grid block first
TOWERS = ("dinov2", "clip")  # SigLIP has its own tests below: LLaVA's "default" strategy does not fit it


def patched_modules(model) -> list[str]:
    return [name for name, module in model.named_modules() if "forward" in module.__dict__]


# -- nothing compressed, or compression undone: the model is exactly itself --------------------------------------


@pytest.mark.parametrize("tower", TOWERS)
def test_keep_one_is_bit_identical_in_forward_and_generate(tower):
    model = build(tower)
    inputs, _ = pair()
    ref, ref_gen = logits(model, inputs), generate(model, inputs)
    with tokenfunnel.compress(model, "luvc", keep=1.0) as handle:
        assert torch.equal(logits(model, inputs), ref)
        assert torch.equal(generate(model, inputs), ref_gen)
        report = handle.report()
    assert report["llm_visual_tokens"] == [PATCHES] * 6 and report["keep"] == 1.0
    assert report["encoder_tokens"] == [PATCHES + 1] * 4


def test_remove_and_with_block_restore_the_model_bit_for_bit():
    model = build()
    inputs, _ = pair()
    ref = logits(model, inputs)
    handle = tokenfunnel.compress(model, "luvc", keep=0.25)
    assert not torch.equal(logits(model, inputs)[:, -1], ref[:, -1])
    handle.remove()
    handle.remove()  # harmless twice
    assert torch.equal(logits(model, inputs), ref)
    assert patched_modules(model) == [] and not hasattr(model, MARK)
    with tokenfunnel.compress(model, "luvc", keep=0.25):
        assert not torch.equal(logits(model, inputs)[:, -1], ref[:, -1])
    assert torch.equal(logits(model, inputs), ref)
    assert patched_modules(model) == [] and not hasattr(model, MARK)


def test_another_instance_of_the_same_class_is_untouched():
    first, second = build(seed=3), build(seed=3)
    inputs, _ = pair()
    ref = logits(first, inputs)
    assert torch.equal(logits(second, inputs), ref)  # the same weights
    with tokenfunnel.compress(first, "luvc", keep=0.25):
        assert torch.equal(logits(second, inputs), ref)
        assert patched_modules(second) == []
        assert not torch.equal(logits(first, inputs)[:, -1], ref[:, -1])


# -- padded batches and report() ------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [SPLIT, {}, FOLD, COVER], ids=["split", "defaults", "fold", "cover"])
@pytest.mark.parametrize("keep", [0.25, 0.5])
@pytest.mark.parametrize("tower", TOWERS)
def test_a_padded_batch_matches_each_prompt_alone(tower, keep, options):
    model = build(tower)
    together, alone = pair()
    with tokenfunnel.compress(model, "luvc", keep=keep, **options) as handle:
        last = logits(model, together)[:, -1]
        kept = handle.report()["kept"]
        gen = generate(model, together)
        for row, one in enumerate(alone):
            torch.testing.assert_close(last[row], logits(model, one)[0, -1], atol=1e-4, rtol=0)
            assert [layer[row] for layer in kept] == [layer[0] for layer in handle.report()["kept"]]
            assert torch.equal(gen[row], generate(model, one)[0])


def test_position_ids_broadcast_over_the_batch_as_transformers_allows():
    model = build()
    together = batch([sample_ids(SHORT), sample_ids(SHORT, seed=1)])  # equal lengths: no padding
    row = torch.arange(together["input_ids"].shape[1])[None]
    with tokenfunnel.compress(model, "luvc", keep=0.25), torch.no_grad():
        full = model(**together, position_ids=row.expand(2, -1)).logits
        assert torch.equal(model(**together, position_ids=row).logits, full)


def _assert_boxes_tile_the_grid(report: dict) -> None:
    h, w = report["patch_grid"]
    for boxes in report["boxes"]:
        cover = torch.zeros(h, w, dtype=torch.long)
        for r0, r1, c0, c1 in boxes:
            assert 0 <= r0 <= r1 < h and 0 <= c0 <= c1 < w
            cover[r0 : r1 + 1, c0 : c1 + 1] += 1
        assert bool((cover == 1).all()), cover


@pytest.mark.parametrize("keep", [0.25, 0.5])
@pytest.mark.parametrize("tower", TOWERS)
def test_report_counts_grids_and_boxes_are_consistent(tower, keep):
    model = build(tower)
    together, _ = pair()
    with tokenfunnel.compress(model, "luvc", keep=keep, **SPLIT) as handle:
        logits(model, together)
        report = handle.report()
    counts, original = report["llm_visual_tokens"], report["original_visual_tokens"]
    assert original == PATCHES and report["patch_grid"] == list(GRID)
    assert len(counts) == 6 and counts[-1] == 0
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))
    assert abs(report["keep"] - keep) <= 1 / original
    assert len(report["boxes"]) == 2  # one per image of the batch
    [(gh, gw)] = report["grids"]
    assert report["visual_tokens"] == gh * gw == len(report["boxes"][0])
    _assert_boxes_tile_the_grid(report)
    tokens = report["encoder_tokens"]
    assert len(tokens) == model.config.vision_config.num_hidden_layers and tokens[0] == PATCHES + 1
    assert all(a >= b for a, b in zip(tokens, tokens[1:], strict=False))
    if keep == 0.25:  # grid_keep = 0.5: OIM merges inside the encoder
        assert tokens[-1] < tokens[0] and gh * gw < PATCHES
    else:  # grid_keep = 1.0: no OIM
        assert tokens == [PATCHES + 1] * 4 and (gh, gw) == GRID
    assert [len(layer[0]) for layer in report["kept"]] == counts


# -- generate(), decoding against pruned caches, cached scoring ------------------------------------------------


def greedy(model, inputs: dict, n: int, explicit: bool = True) -> torch.Tensor:
    """Greedy decoding by hand: a prefill, then one token at a time against the cache, positions after the
    *unpruned* prompt (or none, to let the runtime continue them)."""
    mask = inputs["attention_mask"]
    with torch.no_grad():
        out = model(**inputs, position_ids=positions(mask), use_cache=True)
        cache, tokens = out.past_key_values, [out.logits[:, -1].argmax(-1)]
        lengths = mask.sum(-1, keepdim=True)
        for step in range(n - 1):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model(
                input_ids=tokens[-1][:, None],
                attention_mask=mask,
                position_ids=lengths + step if explicit else None,
                past_key_values=cache,
                use_cache=True,
            )
            tokens.append(out.logits[:, -1].argmax(-1))
    return torch.stack(tokens, dim=1)


@pytest.mark.parametrize("options", [SPLIT, {}, FOLD], ids=["split", "defaults", "fold"])
@pytest.mark.parametrize("keep", [0.25, 0.5])
def test_generate_matches_a_manual_greedy_loop(keep, options):
    model = build()
    together, _ = pair()
    with tokenfunnel.compress(model, "luvc", keep=keep, **options) as handle:
        gen = generate(model, together, 6)
        assert handle.report()["llm_visual_tokens"][-1] < PATCHES  # generate()'s prefill was pruned
        assert torch.equal(greedy(model, together, 6), gen)
        assert torch.equal(greedy(model, together, 6, explicit=False), gen)


def test_compressed_decoding_equals_one_compressed_pass_over_prompt_and_continuation():
    # pruning reads visual tokens only, and text after the prompt cannot change them (causal), so a single pass
    # over prompt + continuation prunes exactly as the prefill did: decoding must reproduce its logits
    model = build()
    together, _ = pair()
    fed = torch.tensor([[5, 9, 14], [20, 7, 3]])
    full = dict(together)
    full["input_ids"] = torch.cat([together["input_ids"], fed], dim=1)
    full["attention_mask"] = torch.cat([together["attention_mask"], torch.ones_like(fed)], dim=1)
    with tokenfunnel.compress(model, "luvc", keep=0.25):
        one_pass = logits(model, full)[:, -fed.shape[1] :]
        mask = together["attention_mask"]
        with torch.no_grad():
            cache = model(**together, position_ids=positions(mask), use_cache=True).past_key_values
            step = dict(
                input_ids=fed,
                attention_mask=full["attention_mask"],
                position_ids=mask.sum(-1, keepdim=True) + torch.arange(fed.shape[1]),
                past_key_values=cache,
                use_cache=True,
            )
            first = model(**step).logits
            cache.crop(-fed.shape[1])  # the scoring path: score a candidate, crop back, score again
            second = model(**step).logits
            cache.crop(-fed.shape[1])
            one_by_one = []
            for i in range(fed.shape[1]):
                one_by_one.append(
                    model(
                        input_ids=fed[:, i : i + 1],
                        attention_mask=full["attention_mask"][:, : mask.shape[1] + i + 1],
                        position_ids=mask.sum(-1, keepdim=True) + i,
                        past_key_values=cache,
                        use_cache=True,
                    ).logits
                )
    assert torch.equal(first, second)
    # one token at a time sums attention in another order than three at once: ~1e-5 apart on some CPUs
    torch.testing.assert_close(torch.cat(one_by_one, dim=1), first, atol=5e-5, rtol=0)
    torch.testing.assert_close(first, one_pass, atol=1e-4, rtol=0)


def test_an_older_pruned_cache_can_still_be_decoded_after_another_prefill():
    # e.g. scoring two batches in turn, or keeping a prompt's cache while another prompt is prefilled
    model = build()
    first, _ = pair()
    second, _ = pair(seed=5)
    mask = first["attention_mask"]
    step = dict(
        input_ids=torch.tensor([[5], [6]]),
        attention_mask=torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1),
        position_ids=mask.sum(-1, keepdim=True),
        use_cache=True,
    )
    with tokenfunnel.compress(model, "luvc", keep=0.25), torch.no_grad():
        cache = model(**first, position_ids=positions(mask), use_cache=True).past_key_values
        ref = model(**step, past_key_values=cache).logits
        cache = model(**first, position_ids=positions(mask), use_cache=True).past_key_values
        model(**second, position_ids=positions(second["attention_mask"]), use_cache=True)
        torch.testing.assert_close(model(**step, past_key_values=cache).logits, ref, atol=1e-5, rtol=0)


# -- attention kernels, feature layers, options ------------------------------------------------------------------


def test_eager_attention_gives_the_sdpa_results():
    sdpa, eager = build(attn="sdpa"), build(attn="eager")
    assert eager.model.language_model.config._attn_implementation == "eager"
    together, _ = pair()
    real = together["attention_mask"].bool()  # rows of padding queries are kernel-specific garbage: not compared
    torch.testing.assert_close(logits(eager, together)[real], logits(sdpa, together)[real], atol=1e-4, rtol=0)
    with tokenfunnel.compress(sdpa, "luvc", keep=0.25), tokenfunnel.compress(eager, "luvc", keep=0.25):
        # a compressed forward returns logits of the surviving (here: text) tokens only, so compare the last ones
        torch.testing.assert_close(logits(eager, together)[:, -1], logits(sdpa, together)[:, -1], atol=1e-4, rtol=0)
        assert torch.equal(generate(eager, together), generate(sdpa, together))


def test_second_to_last_feature_layer_merges_only_where_it_feeds_the_projector():
    model = build(feature_layer=-2)
    inputs = prompt()
    ref = logits(model, inputs)
    with tokenfunnel.compress(model, "luvc", keep=1.0):
        assert torch.equal(logits(model, inputs), ref)
    with tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT) as handle:
        logits(model, inputs)
        report = handle.report()
    gh, gw = report["grids"][0]
    assert gh * gw < PATCHES and report["llm_visual_tokens"][-1] == 0
    # hidden_states[-2] is the last layer's *input*: every merge must be done by then (the class token stays)
    assert report["encoder_tokens"][-1] == gh * gw + 1


def test_proportional_attention_changes_the_output_only_once_tokens_are_merged():
    model = build()
    inputs = prompt()
    out = {}
    for keep in (0.25, 0.5):  # OIM merges at 0.25 (grid_keep 0.5), not at 0.5 (grid_keep 1.0)
        for proportional in (False, True):
            with tokenfunnel.compress(model, "luvc", keep=keep, proportional=proportional, **SPLIT):
                out[keep, proportional] = logits(model, inputs)
    assert torch.isfinite(out[0.25, True]).all()
    assert not torch.allclose(out[0.25, True], out[0.25, False], atol=1e-4)
    assert torch.equal(out[0.5, True], out[0.5, False])


@pytest.mark.parametrize(
    "options",
    [
        dict(shape="linear"),
        dict(shape="geometric"),
        dict(shape="step"),
        dict(spectrum="2d"),
        dict(spectrum="1d"),
        dict(spectrum="channel"),
        dict(prefer="low"),
        dict(normed=False, cutoff=0.25),
        dict(start=2, grid_keep=None),  # all 64 tokens through two layers fit the budget only after OIM
        dict(contextual=0.25),
        dict(contextual=0.5, shape="geometric", grid_keep=None),
    ],
    ids=str,
)
def test_each_option_runs_to_zero_at_the_requested_keep(options):
    model = build()
    together, _ = pair()
    options = {"stage": "llm", "final_zero": True, **options}  # the language-model cascade, emptied at the end
    with tokenfunnel.compress(model, "luvc", keep=0.25, **options) as handle:
        out = logits(model, together)
        report = handle.report()
    assert torch.isfinite(out).all()
    assert report["llm_visual_tokens"][-1] == 0
    assert abs(report["keep"] - 0.25) <= 1 / PATCHES


@pytest.mark.parametrize("shape", ["linear", "geometric", "step", "flat"])
def test_every_shape_honours_a_low_keep_without_oim(shape):
    # with grid_keep=1.0 all 64 tokens enter the decoder; keep=0.1 asks for 38.4 token-layers over 6 layers
    model = build()
    with tokenfunnel.compress(model, "luvc", keep=0.1, grid_keep=1.0, shape=shape) as handle:
        logits(model, prompt())
        report = handle.report()
    assert abs(report["keep"] - 0.1) <= 1 / PATCHES, report["llm_visual_tokens"]


def test_two_images_per_sample_in_a_padded_batch():
    model = build()
    samples = [sample_ids([2, 3, 4], images=2), sample_ids([6, 1, 5], images=2, seed=1)]
    together = batch(samples, images=2)
    with tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT) as handle:
        last = logits(model, together)[:, -1]
        report = handle.report()
        for row, s in enumerate(samples):
            one = batch([s], images=2)
            one["pixel_values"] = together["pixel_values"][2 * row : 2 * row + 2]
            torch.testing.assert_close(last[row], logits(model, one)[0, -1], atol=1e-4, rtol=0)
    assert report["original_visual_tokens"] == 2 * PATCHES and len(report["grids"]) == 2
    assert len(report["boxes"]) == 4 and report["llm_visual_tokens"][-1] == 0
    _assert_boxes_tile_the_grid(report)


# -- SigLIP: no class token, so LLaVA's "default" feature selection drops a real patch ------------------------------


def test_siglip_with_full_features_compresses():
    # the right LLaVA setup for a SigLIP tower is strategy "full": all 64 patches reach the projector
    model = build("siglip", strategy="full")
    inputs = prompt()
    ref = logits(model, inputs)
    with tokenfunnel.compress(model, "luvc", keep=1.0):
        assert torch.equal(logits(model, inputs), ref)
    with tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT) as handle:
        logits(model, inputs)
        assert handle.report()["llm_visual_tokens"][-1] == 0


def test_siglip_with_default_features_is_refused_up_front_or_left_exact():
    # "default" hands 63 of 64 patches to the projector: the unmodified model needs 63 placeholders per image.
    # compress() must either refuse such a model at once or leave it exact; failing only at forward time is a trap
    model = build("siglip")
    inputs = prompt(per_image=PATCHES - 1)
    ref = logits(model, inputs)
    try:
        handle = tokenfunnel.compress(model, "luvc", keep=1.0)
    except ValueError:
        assert torch.equal(logits(model, inputs), ref)
        return
    with handle:
        assert torch.equal(logits(model, inputs), ref)


def test_encoder_grid_is_known_before_the_image_runs():
    model = build("dinov2")
    inputs = prompt()
    with tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT) as handle:
        expected = handle.encoder_grid(8, 8)
        with torch.no_grad():
            model(**inputs)
        assert tuple(handle.report()["grids"][0]) == expected
        assert expected[0] * expected[1] < 64


def test_folding_changes_what_the_kept_tokens_hold_not_how_many():
    model = build()
    together, _ = pair()
    with tokenfunnel.compress(model, "luvc", keep=0.25) as handle:
        dropped, plain = logits(model, together), handle.report()
    with tokenfunnel.compress(model, "luvc", keep=0.25, contextual=0.25) as handle:
        folded, report = logits(model, together), handle.report()
    assert report["llm_visual_tokens"] == plain["llm_visual_tokens"] and report["keep"] == plain["keep"]
    assert not torch.allclose(folded[:, -1], dropped[:, -1], atol=1e-4)
    with tokenfunnel.compress(model, "luvc", keep=1.0, contextual=0.25):
        assert torch.equal(logits(model, together), logits(build(), together))  # nothing dropped, nothing folded
