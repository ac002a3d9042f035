import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfunnel.ops.budget import check_schedule, stages
from tokenfunnel.ops.temporal import changed_tokens, merge_frames

FAST = settings(max_examples=100, deadline=None)


def _frames(pattern: list[int], n: int = 6, d: int = 8, seed: int = 0) -> torch.Tensor:
    """Frames (T, n, d) drawn from a few random base frames, ``pattern`` naming which base each frame repeats."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(max(pattern) + 1, n, d, generator=g)
    return base[pattern]


def test_identical_frames_fold_into_one_and_a_new_scene_starts_a_new_frame():
    frames = _frames([0, 0, 0, 1, 1, 2])
    fm = merge_frames(frames, 0.99)
    assert fm.first == [0, 3, 5] and fm.group == [0, 0, 0, 1, 1, 2] and fm.sizes == [3, 2, 1]
    assert torch.allclose(fm.merged, frames[[0, 3, 5]], atol=1e-6)


def test_the_fold_weighs_the_running_frame_by_the_similarity():
    a = torch.randn(5, 4)
    b = a + 0.1 * torch.randn(5, 4)
    fm = merge_frames(torch.stack([a, b]), 0.5)
    s = torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
    assert fm.first == [0] and fm.similarity[1] == pytest.approx(float(s), abs=1e-6)
    assert torch.allclose(fm.merged[0], s * a + (1 - s) * b, atol=1e-6)


@FAST
@given(st.lists(st.integers(0, 3), min_size=1, max_size=8), st.floats(0, 1))
def test_groups_are_consecutive_runs_starting_at_their_first_frame(pattern, threshold):
    fm = merge_frames(_frames(pattern), threshold)
    assert fm.first[0] == 0 and fm.group[0] == 0 and len(fm.group) == len(pattern)
    assert fm.group == sorted(fm.group) and [fm.group[f] for f in fm.first] == list(range(len(fm.first)))
    assert len(fm.merged) == len(fm.first) and sum(fm.sizes) == len(pattern)


def test_threshold_one_keeps_every_frame_and_every_token():
    frames = _frames([0, 0, 1])
    assert merge_frames(frames, 1.0).first == [0, 1, 2]
    assert changed_tokens(frames, 1.0).all()


def test_unchanged_tokens_are_dropped_and_the_first_frame_is_kept_whole():
    frames = _frames([0, 0, 0])
    frames[2, 1] = -frames[2, 1]  # one token of the last frame changes
    keep = changed_tokens(frames, 0.9)
    assert keep[0].all() and not keep[1].any()
    assert keep[2].tolist() == [False, True, False, False, False, False]


def test_slow_drift_shows_once_it_has_added_up():
    # a token turning by 10 degrees per frame: never 0.9-dissimilar to the previous frame, but it is to the last
    # kept one after three steps (cos 30 degrees = 0.866)
    angles = torch.deg2rad(torch.arange(7) * 10.0)
    frames = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)[:, None, :]
    keep = changed_tokens(frames, 0.9)[:, 0].tolist()
    assert keep == [True, False, False, True, False, False, True]


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_a_threshold_outside_zero_one_is_refused(threshold):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        merge_frames(_frames([0, 1]), threshold)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        changed_tokens(_frames([0, 1]), threshold)


def test_no_frames_is_refused():
    with pytest.raises(ValueError, match="T >= 1"):
        merge_frames(torch.zeros(0, 4, 8), 0.9)


def test_the_pvc_schedule_keeps_100_70_50_40_percent_from_depths_0_quarter_half_three_quarters():
    counts = stages(100, 32, ((0, 1.0), (0.25, 0.7), (0.5, 0.5), (0.75, 0.4)))
    assert counts == [100] * 8 + [70] * 8 + [50] * 8 + [40] * 8
    assert stages(10, 4, ((0.5, 0.5),)) == [10, 10, 5, 5]  # before the first pair, everything stays


@pytest.mark.parametrize(
    "schedule", [(), ((0.5, 0.5), (0.25, 0.4)), ((0, 0.5), (0.5, 0.7)), ((0, 1.5),), ((1.0, 0.5),), ((0, "x"),)]
)
def test_a_malformed_schedule_is_refused(schedule):
    with pytest.raises(ValueError, match="schedule"):
        check_schedule(schedule)
