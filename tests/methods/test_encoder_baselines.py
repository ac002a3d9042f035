"""Encoder-side baselines (visionzip, tome, pool, downsample) on tiny LLaVAs: the shared guards, and each checked
against what it claims to compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tokenfunnel
from tiny import GRID, IMAGE_PX, PATCHES, assert_rows_match_alone, build, generate, logits, pair, prompt
from tokenfunnel.ops.setmerge import bipartite, merge_groups

ENCODER = ("visionzip", "tome", "pool", "downsample")
TOWERS = ("dinov2", "clip")


def projector_input(model, inputs: dict, method: str | None = None, **options) -> torch.Tensor:
    seen = []
    hook = model.model.multi_modal_projector.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    try:
        if method is None:
            logits(model, inputs)
        else:
            with tokenfunnel.compress(model, method, **options):
                logits(model, inputs)
    finally:
        hook.remove()
    return seen[0]


@pytest.mark.parametrize("tower", TOWERS)
@pytest.mark.parametrize("method", ENCODER)
def test_keep_one_is_exact_remove_restores_and_batches_equal_single_runs(method, tower):
    model = build(tower)
    together, alone = pair()
    ref = logits(model, together)
    with tokenfunnel.compress(model, method, keep=1.0):
        assert torch.equal(logits(model, together), ref)
    with tokenfunnel.compress(model, method, keep=0.5) as handle:
        last = logits(model, together)[:, -1]
        report = handle.report()
        gen = generate(model, together, 3)
        assert_rows_match_alone(model, alone, last, gen, 3)
    assert torch.equal(logits(model, together), ref)
    assert report["keep"] == 0.5 and report["llm_visual_tokens"] == [PATCHES // 2] * 6
    assert report["visual_tokens"] == PATCHES // 2
    assert handle.encoder_grid(*GRID) == tuple(report["grids"][0])


@pytest.mark.parametrize("method", ENCODER)
def test_boxes_are_inside_the_grid_and_each_token_sits_in_its_own_box(method):
    model = build()
    with tokenfunnel.compress(model, method, keep=0.25) as handle:
        logits(model, prompt())
        report = handle.report()
    h, w = report["patch_grid"]
    cover = torch.zeros(h, w, dtype=torch.long)
    for r0, r1, c0, c1 in report["boxes"][0]:
        assert 0 <= r0 <= r1 < h and 0 <= c0 <= c1 < w
        cover[r0 : r1 + 1, c0 : c1 + 1] += 1
    assert bool((cover >= 1).all())  # every patch belongs to some token
    if method in ("pool", "downsample"):  # bins tile the grid exactly
        assert bool((cover == 1).all())


@pytest.mark.parametrize(
    ("method", "options"),
    [(m, {}) for m in ENCODER]
    + [("luvc", {}), ("luvc", {"stage": "encoder", "contextual": 0.0}), ("luvc", {"grid_keep": 0.5})],
)
def test_patch_owner_names_the_token_holding_each_patch_and_its_box_bounds_them(method, options):
    model = build()
    with tokenfunnel.compress(model, method, keep=0.25, **options) as handle:
        logits(model, prompt())
        report = handle.report()
    h, w = report["patch_grid"]
    owner = torch.tensor(report["patch_owner"][0]).view(h, w)
    boxes = report["boxes"][0]
    assert bool((owner >= -1).all()) and int(owner.max()) < len(boxes)
    for token, (r0, r1, c0, c1) in enumerate(boxes):
        rows, cols = (owner == token).nonzero(as_tuple=True)
        assert len(rows), "every token holds at least one patch"
        assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (r0, r1, c0, c1)
    dropped = int((owner == -1).sum())
    if options.get("contextual") == 0.0:  # a pure drop: the kept tokens are single patches, the rest gone
        assert dropped == h * w - len(boxes)
    else:  # merges (and contextual tokens) lose no patch
        assert dropped == 0


def test_pool_averages_the_unmodified_encoder_output_over_bins():
    model = build()
    inputs = prompt()
    full = projector_input(model, inputs)  # (1, 64, C) after the class token is dropped
    pooled = projector_input(model, inputs, "pool", keep=0.25)
    expect = F.avg_pool2d(full.view(1, *GRID, -1).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).flatten(1, 2)
    torch.testing.assert_close(pooled, expect, atol=1e-5, rtol=1e-5)


def test_downsample_shows_the_encoder_the_resized_image():
    model = build()
    inputs = prompt()
    small = F.interpolate(inputs["pixel_values"], size=(IMAGE_PX // 2,) * 2, mode="bilinear", antialias=True)
    with torch.no_grad():
        expect = model.model.vision_tower(small, output_hidden_states=True).hidden_states[-1][:, 1:]
    got = projector_input(model, inputs, "downsample", keep=0.25)
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
    with tokenfunnel.compress(model, "downsample", keep=0.25) as handle:
        logits(model, inputs)
        assert handle.report()["encoder_tokens"] == [PATCHES // 4 + 1] * 4


def test_visionzip_keeps_the_patches_the_class_token_attends_to_most():
    model = build(attn="eager")
    inputs = prompt()
    with torch.no_grad():
        out = model.model.vision_tower(inputs["pixel_values"], output_attentions=True)
    cls = out.attentions[-1][0, :, 0, 1:].mean(0)  # last layer: class token -> patches, averaged over heads
    with tokenfunnel.compress(model, "visionzip", keep=0.25, contextual=0.25) as handle:
        logits(model, inputs)
        boxes = handle.report()["boxes"][0]
    singles = {r0 * GRID[1] + c0 for r0, r1, c0, c1 in boxes if r0 == r1 and c0 == c1}
    dominant = set(cls.topk(12).indices.tolist())  # 16 tokens: 12 dominant + 4 contextual
    assert dominant <= singles


def test_tome_merges_exactly_the_pairs_that_are_most_alike():
    g = torch.Generator().manual_seed(0)
    metric = torch.randn(1, 8, 16, generator=g)
    metric[0, 2] = metric[0, 5]  # A token 2 is a copy of B token 5
    metric[0, 4] = metric[0, 1] + 1e-3  # A token 4 is almost B token 1
    assign, rep = bipartite(metric, 2)
    assert assign[0, 2] == assign[0, 5] and assign[0, 4] == assign[0, 1]
    assert len(set(assign[0].tolist())) == 6 and rep.shape == (1, 6)


def test_merge_groups_averages_by_size_and_returns_raster_order():
    x = torch.tensor([[[1.0], [3.0], [10.0], [20.0]]])
    size = torch.tensor([[1.0, 3.0, 1.0, 1.0]])
    cells = torch.tensor([[0, 1, 2, 3]])
    cover = torch.tensor([[[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]]])
    assign = torch.tensor([[1, 1, 0, 0]])  # slot 1 = tokens 0 + 1, slot 0 = tokens 2 + 3
    rep = torch.tensor([[3, 0]])
    out, sizes, new_cells, boxes, went = merge_groups(x, size, cells, cover, assign, rep)
    assert new_cells.tolist() == [[0, 3]]  # sorted by cell: slot 1 (cell 0) first
    assert went.tolist() == [[0, 0, 1, 1]]  # tokens 0 + 1 became output 0, tokens 2 + 3 output 1
    assert out[0, :, 0].tolist() == [2.5, 15.0] and sizes.tolist() == [[4.0, 2.0]]
    assert boxes.tolist() == [[[0, 0, 0, 1], [1, 1, 0, 1]]]


def test_encoder_side_methods_refuse_other_families_and_unreachable_keeps():
    from types import SimpleNamespace

    from tokenfunnel.methods.pool import Pool, PoolConfig

    other = SimpleNamespace(family="qwen2_vl")
    with pytest.raises(ValueError, match="LLaVA-family models only"):
        Pool(PoolConfig(keep=0.5)).check(other)
    model = build()
    with pytest.raises(ValueError, match="tome cannot reach keep 0.05"):
        tokenfunnel.compress(model, "tome", keep=0.05)  # 61 merges over 4 layers of 64 tokens
    with pytest.raises(ValueError, match="no token at all"):
        tokenfunnel.compress(model, "visionzip", keep=0.001)
    assert "forward" not in model.__dict__
