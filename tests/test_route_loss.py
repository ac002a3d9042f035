import math

import torch
from transformers import LlamaModel

from tiny import text_config
from tokenfunnel.data import easyvqa
from tokenfunnel.models.route_loss import RouteLoss, named_tile, quadrant_mask


def test_named_tile_reads_the_tile_a_mosaic_question_names():
    for index, tile in enumerate(easyvqa.TILES):
        assert named_tile(easyvqa.tile_question(tile, "what shape is in the image?")) == index
    assert named_tile("what shape is in the image?") is None


def test_quadrant_mask_splits_a_row_major_grid_into_the_mosaic_tiles():
    masks = quadrant_mask(4)
    assert masks.sum(0).eq(1).all() and masks.sum(1).eq(4).all()
    grid = masks.float().argmax(0).view(4, 4)
    assert grid.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_route_share_is_the_eager_attention_among_visual_tokens_on_the_named_tile():
    torch.manual_seed(0)
    lm = LlamaModel(text_config(layers=3)).eval()
    lm.config._attn_implementation = "eager"
    start, side, length = 3, 4, 24
    ids = torch.randint(3, 90, (2, length))
    rows, tokens, tiles = torch.tensor([0, 1, 1]), torch.tensor([20, 21, 23]), torch.tensor([2, 0, 3])
    route = RouteLoss(lm, [1, 2], side)
    route.arm(rows, tokens, tiles, visual_start=start)
    with torch.no_grad():
        out = lm(input_ids=ids, output_attentions=True)
    loss, share = route.take()
    route.remove()
    visual = slice(start, start + side * side)
    masks = quadrant_mask(side).float()
    expected = []
    for layer in (1, 2):
        weights = out.attentions[layer][rows, :, tokens][..., visual]  # (n, H, V)
        weights = weights / weights.sum(-1, keepdim=True)
        expected.append(-torch.log((weights * masks[tiles][:, None]).sum(-1).mean(1)).mean())
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-4, atol=1e-5)
    assert math.isclose(share, math.exp(-loss.item()), rel_tol=1e-6)
    assert route.take() == (None, 0.0)  # disarmed after a take; hooks removed


def test_route_loss_trains_the_query_and_key_projections():
    torch.manual_seed(0)
    lm = LlamaModel(text_config(layers=2))
    route = RouteLoss(lm, [1], side=2)
    route.arm(torch.tensor([0]), torch.tensor([7]), torch.tensor([1]), visual_start=2)
    lm(input_ids=torch.randint(3, 90, (1, 8)))
    loss, _ = route.take()
    loss.backward()
    attention = lm.layers[1].self_attn
    assert attention.q_proj.weight.grad.abs().sum() > 0 and attention.k_proj.weight.grad.abs().sum() > 0
    assert lm.layers[1].self_attn.v_proj.weight.grad is None  # the loss never reads the values
