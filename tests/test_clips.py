"""``easyvqa-clips``: one picture held over most frames, another over 2-3, the question about one of them."""

from collections import Counter

import numpy as np
import pytest

from tokenfunnel.bench import data
from tokenfunnel.data import clips, easyvqa


@pytest.fixture(scope="module")
def clip_samples():
    return clips.clip_set(30, seed=3)


def _distance(frame, image) -> float:
    """Mean absolute difference to ``image`` under the best shift of up to two pixels (the clip's jitter)."""
    a, b = np.asarray(frame, dtype=np.float32), np.asarray(image, dtype=np.float32)
    best = np.inf
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            # compare away from the border, which the shift fills with edge pixels
            moved = b[2 - dy : 62 - dy, 2 - dx : 62 - dx]
            best = min(best, float(np.abs(a[2:62, 2:62] - moved).mean()))
    return best


def test_clip_set_is_deterministic(clip_samples):
    again = clips.clip_set(30, seed=3)
    other = clips.clip_set(30, seed=4)

    def key(s):
        return s.question, s.image_ids, s.meta

    assert [key(s) for s in clip_samples] == [key(s) for s in again]
    assert [key(s) for s in clip_samples] != [key(s) for s in other]
    for a, b in zip(clip_samples[:4], again[:4], strict=True):
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.frames, b.frames, strict=True))


def test_kinds_and_variants_are_balanced(clip_samples):
    assert Counter(s.kind for s in clip_samples) == {"yes/no": 10, "shape": 10, "color": 10}
    assert Counter(s.meta["variant"] for s in clip_samples) == {"middle": 15, "last": 15}


def test_frames_are_jittered_noisy_copies_of_two_pictures(clip_samples):
    for sample in clip_samples[:6]:
        assert len(sample.frames) == 16 and all(f.size == (64, 64) and f.mode == "RGB" for f in sample.frames)
        main = easyvqa.load_image("test", sample.meta["main_id"])
        inserted = easyvqa.load_image("test", sample.meta["inserted_id"])
        for index, frame in enumerate(sample.frames):
            shown, hidden = (inserted, main) if index in sample.meta["inserted_frames"] else (main, inserted)
            assert _distance(frame, shown) < 4  # noise of sd 3 only
            assert _distance(frame, hidden) > _distance(frame, shown) + 2
        pixels = [np.asarray(f).tobytes() for f in sample.frames]
        assert len(set(pixels)) == len(pixels)  # every frame differs a little


def test_insert_placement_and_question_follow_the_variant(clip_samples):
    known = {(q.text, q.answer, q.image_id) for q in easyvqa.questions("test")}
    looks = easyvqa.looks_of("test")
    for sample in clip_samples:
        meta = sample.meta
        inserted = meta["inserted_frames"]
        assert len(inserted) in (2, 3) and list(inserted) == list(range(inserted[0], inserted[0] + len(inserted)))
        assert sample.image_ids == (meta["main_id"], meta["inserted_id"])
        if meta["variant"] == "middle":
            assert inserted[0] >= 2 and inserted[-1] <= 16 - 3
            assert meta["asked_id"] == meta["main_id"]
            asked = sample.question
        else:
            assert inserted[-1] == 15
            assert meta["asked_id"] == meta["inserted_id"]
            assert sample.question.startswith("In the last picture, ")
            asked = sample.question.removeprefix("In the last picture, ")
        assert (asked, sample.answer, meta["asked_id"]) in known
        assert sample.kind == easyvqa.Question(asked, sample.answer, meta["asked_id"]).kind
        assert np.array_equal(np.asarray(sample.image), np.asarray(easyvqa.load_image("test", meta["asked_id"])))
        # the two pictures share neither shape nor colour
        main, other = looks[meta["main_id"]], looks[meta["inserted_id"]]
        assert main[0] != other[0] and main[1] != other[1]


def test_frame_count_and_image_restriction():
    ids = sorted(easyvqa.looks_of("train"))[:40]
    samples = clips.clip_set(9, seed=1, split="train", image_ids=ids, frames=8)
    assert all(len(s.frames) == 8 for s in samples)
    assert all(set(s.image_ids) <= set(ids) for s in samples)
    for sample in samples:
        inserted = sample.meta["inserted_frames"]
        if sample.meta["variant"] == "middle":
            assert inserted[0] >= 2 and inserted[-1] <= 8 - 3  # two main frames on either side even in 8
        else:
            assert inserted[-1] == 7


def test_model_input_is_the_frames_of_a_clip(clip_samples):
    assert easyvqa.model_input(clip_samples[0]) is clip_samples[0].frames
    single = easyvqa.single_set(1)[0]
    assert single.frames is None and easyvqa.model_input(single) is single.image


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": 0}, "at least 8"),
        ({"frames": 7}, "at least 8"),
        ({"frames": 12.0}, "whole number"),
        ({"samples": 0}, "positive number of questions"),
        ({"image_ids": []}, "no test image"),
    ],
)
def test_bad_clip_requests_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        clips.clip_set(**{"samples": 3, **kwargs})


def test_a_single_picture_cannot_make_a_clip():
    only = min(easyvqa.looks_of("test"))
    with pytest.raises(ValueError, match=f"differs from image {only} in shape and colour"):
        clips.clip_set(1, image_ids=[only])


def test_clip_sets_by_name():
    (sample,) = easyvqa.load_set("easyvqa-clips", 1, seed=2)
    assert sample.frames is not None and sample.meta["variant"] == "middle"
    assert data.capacity("easyvqa-clips") is None and data.capacity("easyvqa-clips-dev") is None
    test = data.load_items("easyvqa-clips", 4, seed=0)
    assert [s.question for s in test] == [s.question for s in clips.clip_set(4, seed=0)]
    dev = data.load_items("easyvqa-clips-dev", 4, seed=0)
    unseen = set(easyvqa.dev_ids())
    assert all(len(s.frames) == 16 and set(s.image_ids) <= unseen for s in dev)
