"""Select stages (lod, difficulty, detail; learned's focus) on the pixel-shuffle families, tiny random Idefics3 /
SmolVLM / InternVL models: they pick among each tile's shuffled tokens, batches equal their samples alone, generate()
continues, keep=1 is the unmodified model bit for bit, remove() restores it; Qwen2-VL has no such stage and says so."""

from __future__ import annotations

import pytest
import torch

import tokenfunnel
from adapters import test_idefics3, test_internvl
from tokenfunnel.methods.learned import save_compressor
from tokenfunnel.ops.compressor import Compressor
from tokenfunnel.runtime.patch import MARK


class Words:
    """A tokenizer stand-in: every id reads as the word "shape"."""

    def decode(self, ids, skip_special_tokens=True):
        return " ".join("shape" for _ in ids)


FAMILIES = {
    "idefics3": (lambda: test_idefics3.build("idefics3"), test_idefics3),
    "smolvlm": (lambda: test_idefics3.build("smolvlm"), test_idefics3),
    "internvl": (test_internvl.build, test_internvl),
}
METHODS = {
    "lod": dict(keep=0.3, tokenizer=Words()),
    "difficulty": dict(tokenizer=Words()),
    "detail": dict(keep=0.5, details="always"),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    build, helpers = FAMILIES[request.param]
    return build(), helpers


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_batch_equals_each_sample_alone_and_generate_continues(family, method):
    model, h = family
    together = h.inputs(h.TEXTS, h.SEEDS)
    kwargs = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False)
    with tokenfunnel.compress(model, method, **METHODS[method]) as handle:
        both = logits(model, together)
        report = handle.report()
        gen = model.generate(**together, **kwargs)[:, -3:]
        for row, (text, seed) in enumerate(zip(h.TEXTS, h.SEEDS, strict=True)):
            one = h.inputs([text], [seed])
            torch.testing.assert_close(both[row, -1], logits(model, one)[0, -1], rtol=1e-4, atol=1e-4)
            assert torch.equal(gen[row], model.generate(**one, **kwargs)[0, -3:])
    side = h.PX // h.PATCH // 2
    assert report["grids"] == [[side, side]] * h.TILES  # the shuffled grid of each tile, which the stage picks from
    assert report["patch_grid"] == [h.PX // h.PATCH] * 2
    assert report["original_visual_tokens"] == h.TILES * h.PER_TILE
    counts = report["llm_visual_tokens"]
    per_sample = counts if isinstance(counts[0], list) else [counts] * 2
    assert all(0 < c[0] < h.TILES * h.PER_TILE for c in per_sample)
    if "keep" in METHODS[method]:
        assert report["keep"] == pytest.approx(METHODS[method]["keep"], abs=1 / h.PER_TILE)
    boxes = torch.tensor(report["boxes"][0])  # each token of a tile covers a 2 x 2 block of its patches
    assert ((boxes[:, 1] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 2] + 1)).tolist() == [4] * h.PER_TILE


def test_keep_one_is_the_unmodified_model_and_remove_restores_it(family):
    model, h = family
    batch = h.inputs(h.TEXTS, h.SEEDS)
    reference = logits(model, batch)
    for method, options in (("lod", dict(focus=False)), ("detail", dict(details="never"))):
        with tokenfunnel.compress(model, method, keep=1.0, **options) as handle:
            assert torch.equal(logits(model, batch), reference), method
            assert handle.report()["keep"] == 1.0
    handle = tokenfunnel.compress(model, "detail", keep=0.25, details="never")
    assert not torch.equal(logits(model, batch)[:, -1], reference[:, -1])
    handle.remove()
    assert torch.equal(logits(model, batch), reference)
    assert not hasattr(model, MARK)


def test_detail_needs_the_pooled_view_on_a_pixel_shuffle_connector():
    model = test_idefics3.build("smolvlm")
    with pytest.raises(ValueError, match="use view='salient'"):
        tokenfunnel.compress(model, "detail", details="always", view="image")
    assert not hasattr(model, MARK)


def test_qwen2_vl_has_no_select_stage_and_says_what_runs_there():
    from adapters.test_qwen2_vl import build

    model = build("qwen2_vl")
    for method, options in METHODS.items():
        with pytest.raises(ValueError, match="a stage the qwen2_vl adapter does not have"):
            tokenfunnel.compress(model, method, **options)
        assert not hasattr(model, MARK)


def detail_report(model, h, **options):
    with tokenfunnel.compress(model, "detail", **options) as handle:
        logits(model, h.inputs(h.TEXTS[:1], h.SEEDS[:1]))
        return handle.report()


def test_detail_reads_the_last_image_as_the_thumbnail_and_the_others_as_tiles(family):
    model, h = family
    n = h.PER_TILE  # 36: a 6 x 6 grid per image; the first image is the tile, the second the thumbnail
    never = detail_report(model, h, keep=0.25, details="never")
    stage = {k: v[0] for k, v in never["stage"].items()}
    # 18 tokens allowed, half of them global: the thumbnail reduced to 3 x 3, every token on a thumbnail cell
    assert (stage["view"], stage["global_grid"], stage["detail_tokens"]) == ("thumbnail", [3, 3], 0)
    assert never["visual_tokens"] == 9 and all(n <= cell < 2 * n for cell in never["kept"][0][0])
    always = detail_report(model, h, keep=0.5, details="always")
    stage = {k: v[0] for k, v in always["stage"].items()}
    assert (stage["global_grid"], stage["global_tokens"], stage["detail_tokens"]) == ([4, 4], 16, 20)
    kept = always["kept"][0][0]
    assert sum(cell < n for cell in kept) == 20 and sum(cell >= n for cell in kept) == 16
    whole = detail_report(model, h, keep=1.0, details="always")  # the whole thumbnail, and every tile token
    assert whole["stage"]["global_grid"] == [[6, 6]] and whole["visual_tokens"] == 2 * n
    apart = detail_report(model, h, keep=0.5, details="never", tiles="images")  # each image its own global view
    assert apart["stage"]["view"] == ["salient"] and apart["visual_tokens"] == 2 * 9


def test_a_thumbnail_view_larger_than_the_budget_is_refused(family):
    model, h = family
    with pytest.raises(ValueError, match="global view of the thumbnail takes 25 tokens but keep 0.3 allows 22"):
        detail_report(model, h, keep=0.3, details="never", global_grid=(5, 5))


class TopLeft:
    """A tokenizer stand-in whose every question names the top-left corner."""

    def decode(self, ids, skip_special_tokens=True):
        return "What is in the top-left corner?"


@pytest.mark.parametrize("method", ["lod", "learned", "difficulty"])
def test_focus_is_not_applied_to_tiles_and_says_so(family, method, tmp_path):
    """The model is not told where a tile lies in the picture, so a named part cannot be found among the tiles."""
    model, h = family
    batch = h.inputs(h.TEXTS[:1], h.SEEDS[:1])
    options = dict(tokenizer=TopLeft()) if method == "difficulty" else dict(keep=0.3, tokenizer=TopLeft())
    if method == "learned":  # a random compressor of this model's width
        torch.manual_seed(0)
        options["weights"] = tmp_path / "compressor.safetensors"
        save_compressor(Compressor(model.config.text_config.hidden_size, hidden=8), options["weights"], {})
    with tokenfunnel.compress(model, method, focus=False, **options):
        blind = logits(model, batch)
    with tokenfunnel.compress(model, method, **options) as handle:
        assert torch.equal(logits(model, batch), blind)
        assert handle.report()["stage"]["focus"] == ["not applied to tiles"]
