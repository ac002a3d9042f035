"""The detail path's pure pieces: the policy, the blocks of a global grid, the pick of detail tokens, and where
each global token stands."""

from __future__ import annotations

import pytest
import torch

from tokenfunnel.ops.detail import (
    blocks,
    detail_reasons,
    named_parts,
    part_cells,
    pick_details,
    requires_details,
    salient,
    stand_ins,
    unseen,
)

FLAT = torch.full((3, 64, 64), 0.5)


def stripes() -> torch.Tensor:
    img = torch.zeros(3, 64, 64)
    img[:, :, ::4] = 1.0  # a vertical edge every other pixel
    return img


@pytest.mark.parametrize(
    "question, needed",
    [
        ("what color is the shape?", False),
        ("is there a circle?", False),
        ("what is the small shape?", True),
        ("what does the text say?", True),
        ("what is in the corner?", True),
        ("In the top-left picture, what is the shape?", True),
        ("WHERE is the red circle", True),
        ("is the shape that you can see in this picture of a thing a circle or a square or a triangle?", True),
        ("what colour is the topmost leftover shape?", False),  # words, not substrings
    ],
)
def test_the_question_decides_on_a_flat_image(question, needed):
    assert requires_details(FLAT, question) is needed


def test_reasons_name_the_words_the_length_and_the_edges():
    assert detail_reasons(FLAT, "top-left or top-right?") == ["word 'top'", "word 'left'", "word 'right'"]
    assert detail_reasons(FLAT, "a b c d", max_words=3) == ["more than 3 words"]
    busy = detail_reasons(stripes(), "what color is it?")
    assert len(busy) == 1 and busy[0].startswith("edge density")
    assert not requires_details(stripes(), "what color is it?", busy=1.0)
    assert not requires_details(FLAT, "what is in the corner?", words=("text",))


def test_blocks_follow_the_bins_of_a_downsampled_grid():
    assert blocks(4, 4, 2, 2).view(4, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    # 5 rows into 2 bins: rows 0-1 and 2-4, as ops.pool.bins splits them
    assert blocks(5, 1, 2, 1).tolist() == [0, 0, 1, 1, 1]


def test_a_block_kept_whole_as_detail_gives_its_slot_to_one_more_detail_token():
    block = blocks(4, 4, 2, 2)
    score = torch.zeros(16)
    score[[0, 1, 4, 5]] = 1.0  # block 0 is the most novel, whole
    score[15] = 0.5
    taken = pick_details(score, block, 4, budget=4)
    # 4 detail tokens fill block 0, whose global token is then not needed: a fifth detail token takes its slot
    assert taken.nonzero()[:, 0].tolist() == [0, 1, 4, 5, 15]
    assert pick_details(score, block, 4, budget=0).sum() == 0
    assert pick_details(score, block, 4, budget=16).all()


def test_a_global_token_stands_at_the_free_cell_nearest_its_block_centre():
    block = blocks(6, 6, 2, 2)  # 3x3 blocks: the centre cell of block 0 is (1, 1) = cell 7
    taken = torch.zeros(36, dtype=torch.bool)
    assert stand_ins(block, taken, 6, 6, 4).tolist() == [7, 10, 25, 28]
    taken[7] = True  # the centre taken: the nearest free cells are 1, 6, 8, 13; the first in raster order wins
    assert stand_ins(block, taken, 6, 6, 4).tolist() == [1, 10, 25, 28]
    taken[[0, 1, 2, 6, 8, 12, 13]] = True
    assert stand_ins(block, taken, 6, 6, 4)[0] == 14
    taken[14] = True  # block 0 kept whole as detail: no global token
    assert stand_ins(block, taken, 6, 6, 4)[0] == -1
    # two images of one sample: the second image's blocks are numbered after the first's
    two = torch.cat([blocks(2, 2, 1, 1), blocks(2, 2, 1, 1) + 1])
    assert stand_ins(two, torch.zeros(8, dtype=torch.bool), 2, 2, 2).tolist() == [0, 4]


def test_unseen_is_zero_for_a_token_the_global_view_holds_anywhere_and_one_for_an_orthogonal_one():
    coarse = torch.eye(4)[:3] * torch.tensor([[2.0], [1.0], [0.5]])  # three global tokens along axes 0, 1, 2
    detail = torch.tensor([[0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    out = unseen(detail, coarse)
    assert out[0] == pytest.approx(0.0, abs=1e-6)  # the same direction as the second global token, wherever it is
    assert out[1] == pytest.approx(1.0)  # nothing in the global view points its way
    assert out[2] == pytest.approx(1 - 2**-0.5)  # 45 degrees from the nearest


def test_salient_picks_per_block_the_token_farthest_from_its_images_mean():
    # two 2x2 images, one block each: the background tokens are alike, one token of each image stands out
    x = torch.tensor([[1.0, 0], [1, 0.1], [0, 1], [1, 0], [1, 0], [1, 0], [1, 0], [-1, 0.2]])
    block = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert salient(x, block, 2, 2).tolist() == [2, 7]
    # a flat image ties everywhere: the first cell of each block in raster order
    flat = torch.ones(8, 3)
    assert salient(flat, blocks(2, 4, 1, 2), 2, 1).tolist() == [0, 2]


@pytest.mark.parametrize(
    "question, parts",
    [
        ("In the top-left picture, what is the shape?", ["top-left"]),
        ("what is in the Lower Right corner, and in the top left?", ["lower-right", "top-left"]),
        ("what is on the right-hand side?", ["right side"]),
        ("what colour is the bottom half?", ["bottom half"]),
        ("what is left?", []),  # a lone direction word names no part
        ("is the top shape red?", []),
    ],
)
def test_named_parts_are_the_corners_and_halves_a_question_names(question, parts):
    assert named_parts(question) == parts


def test_part_cells_cover_the_named_corner_or_half_and_share_an_odd_middle():
    grid = part_cells(["top-left"], 4, 4).view(4, 4).int().tolist()
    assert grid == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert part_cells(["right side"], 3, 3).view(3, 3).int().tolist() == [[0, 1, 1]] * 3
    both = part_cells(["top-left", "bottom-right"], 4, 4).view(4, 4)
    assert both.sum() == 8 and both[0, 0] and both[3, 3] and not both[0, 3]
    with pytest.raises(ValueError, match="names no part"):
        part_cells(["middle"], 4, 4)
