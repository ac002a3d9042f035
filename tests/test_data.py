from collections import Counter

import numpy as np
import pytest

from tokenfunnel.data import easyvqa


def test_answers_are_the_closed_set_of_13():
    assert len(easyvqa.answers()) == 13
    assert {"yes", "no", "circle", "rectangle", "triangle", "teal"} <= set(easyvqa.answers())


def test_single_set_is_deterministic_balanced_and_from_the_test_split():
    first = easyvqa.single_set(30, seed=5)
    again = easyvqa.single_set(30, seed=5)
    other = easyvqa.single_set(30, seed=6)
    assert [(s.question, s.image_ids) for s in first] == [(s.question, s.image_ids) for s in again]
    assert [(s.question, s.image_ids) for s in first] != [(s.question, s.image_ids) for s in other]
    assert Counter(s.kind for s in first) == {"yes/no": 10, "shape": 10, "color": 10}
    test_pairs = {(q.text, q.answer, q.image_id) for q in easyvqa.questions("test")}
    assert all((s.question, s.answer, s.image_ids[0]) in test_pairs for s in first)
    assert all(s.image.size == (64, 64) for s in first)


def test_grid_question_names_the_tile_whose_picture_it_is_about():
    samples = easyvqa.grid_set(24, seed=1)
    test_questions = {(q.text, q.answer, q.image_id) for q in easyvqa.questions("test")}
    for sample in samples:
        assert sample.image.size == (128, 128)
        assert len(set(sample.image_ids)) == 4
        position = easyvqa.TILES.index(sample.tile)
        prefix = f"In the {sample.tile} picture, "
        assert sample.question.startswith(prefix)
        asked = sample.question.removeprefix(prefix)
        assert (asked, sample.answer, sample.image_ids[position]) in test_questions
        # the named tile shows exactly that test image
        x, y = (position % 2) * 64, (position // 2) * 64
        tile = np.asarray(sample.image.crop((x, y, x + 64, y + 64)))
        source = np.asarray(easyvqa.load_image("test", sample.image_ids[position]))
        assert np.array_equal(tile, source)
    assert Counter(s.kind for s in samples) == {"yes/no": 8, "shape": 8, "color": 8}


def test_bad_set_requests_fail_clearly():
    with pytest.raises(ValueError, match="unknown dataset"):
        easyvqa.load_set("coco", 5)
    with pytest.raises(ValueError, match="positive"):
        easyvqa.load_set("easyvqa", 0)
