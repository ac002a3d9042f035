"""``easyvqa-mixed``: tile questions and whole-mosaic questions in turn, answers true to the tiles shown."""

import pytest

from tokenfunnel.data import easyvqa, mixed


@pytest.fixture(scope="module")
def items():
    return mixed.mixed_set(24, seed=5)


def test_scopes_alternate_and_whole_answers_balance(items):
    assert [s.meta["scope"] for s in items] == ["tile", "whole"] * 12
    whole = [s for s in items if s.meta["scope"] == "whole"]
    assert sorted(s.answer for s in whole) == ["no"] * 6 + ["yes"] * 6
    assert {s.meta["attribute"] for s in whole} == {"shape", "color"}
    assert [s.kind for s in items if s.meta["scope"] == "tile"] == list(easyvqa.KINDS) * 4


def test_whole_answers_follow_the_tiles(items):
    looks = easyvqa.looks_of("test")
    for s in items:
        if s.meta["scope"] != "whole":
            continue
        slot = mixed.ATTRIBUTES.index(s.meta["attribute"])
        holders = [t for t, i in zip(easyvqa.TILES, s.image_ids, strict=True) if looks[i][slot] == s.meta["value"]]
        # "yes": exactly one tile holds it, the one recorded; "no": none does
        assert holders == ([s.meta["tile"]] if s.answer == "yes" else [])
        assert s.meta["value"] in s.question and s.tile is None


def test_tile_questions_name_their_tile(items):
    for s in items:
        if s.meta["scope"] == "tile":
            assert s.question.startswith(f"In the {s.tile} picture, ")
            assert len(set(s.image_ids)) == 4 and s.image.size == (128, 128)


def test_deterministic_and_by_name(items):
    again = easyvqa.load_set("easyvqa-mixed", 24, 5)
    assert [(s.question, s.answer, s.image_ids) for s in again] == [(s.question, s.answer, s.image_ids) for s in items]


def test_dev_twin_uses_training_images_only():
    dev = easyvqa.load_set("easyvqa-mixed-dev", 6, 0)
    allowed = set(easyvqa.dev_ids())
    assert all(set(s.image_ids) <= allowed for s in dev)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown dataset 'easyvqa-mix'"):
        easyvqa.load_set("easyvqa-mix", 4)
    with pytest.raises(ValueError, match="positive number"):
        mixed.mixed_set(0)
    with pytest.raises(ValueError, match="at least 8"):
        mixed.mixed_set(2, image_ids=sorted(easyvqa.looks_of("test"))[:5])
