"""PVC and its temporal stages on tiny random LLaVAs, with videos given as runs of <image> placeholders: exact
where nothing is merged, merged frames standing where their first frame stood, batches of videos that keep
different counts equal to each video alone, report() bookkeeping, and refusals."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import tokenfunnel
from tiny import IMAGE_TOKEN, PATCHES, batch, build, generate, logits, prompt, sample_ids
from tokenfunnel.methods.pvc import PVC, PVCConfig
from tokenfunnel.runtime.patch import MARK

FRAMES = 4
TEMPORAL = {
    "pvc": dict(frame_threshold=0.99),
    "pvc-frames": dict(frame_threshold=0.99),
    "pvc-tokens": dict(token_threshold=0.99),
}


def video(pattern: list[int], seed: int = 0) -> torch.Tensor:
    """Frames (T, 3, 112, 112) repeating a few random pictures as ``pattern`` says: repeats are exact duplicates."""
    g = torch.Generator().manual_seed(seed)
    pictures = torch.randn(max(pattern) + 1, 3, 112, 112, generator=g)
    return pictures[pattern]


def clip_prompt(text: list[int], pattern: list[int], seed: int = 0) -> dict:
    inputs = batch([sample_ids(text, images=len(pattern), seed=seed)], images=len(pattern))
    inputs["pixel_values"] = video(pattern, seed)
    return inputs


def two_clips() -> tuple[dict, list[dict]]:
    """A padded batch of two 4-frame videos that fold into 2 and 3 frames, and each alone."""
    alone = [clip_prompt([3, 0, 0, 0, 4], [0, 0, 1, 1]), clip_prompt([6, 0, 0, 0, 2], [0, 1, 2, 2], seed=1)]
    width = max(a["input_ids"].shape[1] for a in alone)
    together = {
        "input_ids": torch.cat(
            [torch.nn.functional.pad(a["input_ids"], (width - a["input_ids"].shape[1], 0)) for a in alone]
        ),
        "attention_mask": torch.cat(
            [torch.nn.functional.pad(a["attention_mask"], (width - a["attention_mask"].shape[1], 0)) for a in alone]
        ),
        "pixel_values": torch.cat([a["pixel_values"] for a in alone]),
    }
    return together, alone


@pytest.mark.parametrize("method", sorted(TEMPORAL))
def test_a_batch_of_videos_keeping_different_counts_equals_each_video_alone(method):
    model = build()
    together, alone = two_clips()
    with tokenfunnel.compress(model, method, **TEMPORAL[method]) as handle:
        out, gen = logits(model, together), generate(model, together)
        report = handle.report()
        for row, one in enumerate(alone):
            assert torch.allclose(out[row, -1], logits(model, one)[0, -1], atol=1e-5)
            assert torch.equal(gen[row], generate(model, one)[0])
            assert handle.report()["llm_visual_tokens"] == report["llm_visual_tokens"][row]
    assert report["temporal"]["merged_frames"] == ([2, 3] if method != "pvc-tokens" else [4, 4])
    per = PATCHES if method != "pvc" else report["grids"][0][0] * report["grids"][0][1]
    assert report["temporal"]["tokens_after"] == [2 * per, 3 * per]
    assert [counts[0] for counts in report["llm_visual_tokens"]] == [2 * per, 3 * per]
    assert report["keep"] == pytest.approx(sum(report["keep_per_sample"]) / 2)


def test_a_merged_frame_stands_where_its_first_frame_stood():
    """Frames [A, A, B] fold to [A, B]: exactly the unmodified model with frame 1's placeholders masked out, every
    other token at its own position."""
    model = build()
    inputs = clip_prompt([3, 2, 2, 4], [0, 0, 1])
    t = inputs["input_ids"].shape[1]
    positions = torch.arange(t)[None]
    masked = dict(inputs)
    masked["attention_mask"] = inputs["attention_mask"].clone()
    runs = (inputs["input_ids"][0] == IMAGE_TOKEN).nonzero()[:, 0].view(3, PATCHES)
    masked["attention_mask"][0, runs[1]] = 0
    with torch.no_grad():
        ref = model(**masked, position_ids=positions).logits[0, -1]
        with tokenfunnel.compress(model, "pvc-frames", frame_threshold=0.99) as handle:
            out = model(**inputs, position_ids=positions).logits[0, -1]
            report = handle.report()
    assert torch.allclose(out, ref, atol=1e-5)
    assert report["temporal"]["frame_groups"] == [[0, 0, 1]] and report["llm_visual_tokens"] == [2 * PATCHES] * 6
    [(first, repeat, cut)] = report["temporal"]["frame_similarity"]  # what the threshold was compared with
    assert first == 1.0 and repeat > 0.99 > cut


def test_with_every_stage_off_the_model_is_bit_identical_and_remove_restores_it():
    model = build()
    inputs = clip_prompt([3, 2, 2, 4], [0, 0, 1])
    ref, ref_gen = logits(model, inputs), generate(model, inputs)
    handle = tokenfunnel.compress(model, "pvc-frames", frame_threshold=1.0)
    assert torch.equal(logits(model, inputs), ref) and torch.equal(generate(model, inputs), ref_gen)
    assert handle.report()["temporal"]["merged_frames"] == [3] and handle.report()["keep"] == 1.0
    handle.remove()
    with tokenfunnel.compress(model, "pvc", frame_threshold=0.99):
        assert not torch.equal(logits(model, inputs), ref)
    assert torch.equal(logits(model, inputs), ref) and not hasattr(model, MARK)


def test_an_image_is_a_one_frame_video():
    model = build()
    inputs = prompt()
    ref = logits(model, inputs)
    with tokenfunnel.compress(model, "pvc-frames") as handle:
        assert torch.equal(logits(model, inputs), ref)
        assert handle.report()["temporal"]["frames"] == [1]
    with tokenfunnel.compress(model, "pvc") as handle:
        logits(model, inputs)
        report = handle.report()
    assert report["temporal"]["merged_frames"] == [1] and report["keep"] < 0.5


def test_pvc_cascades_by_its_schedule_from_what_the_temporal_stages_leave():
    model = build()
    with tokenfunnel.compress(model, "pvc", frame_threshold=0.99, schedule=[(0, 1), (0.5, 0.5)]) as handle:
        logits(model, clip_prompt([3, 2, 2, 4], [0, 0, 0]))
        report = handle.report()
    n = report["temporal"]["tokens_after"][0]
    assert report["temporal"]["merged_frames"] == [1] and n == report["grids"][0][0] * report["grids"][0][1] < PATCHES
    assert report["llm_visual_tokens"] == [n] * 3 + [round(n / 2)] * 3
    assert report["keep"] == pytest.approx(sum(report["llm_visual_tokens"]) / (6 * 3 * PATCHES), abs=1e-6)


def test_token_level_pruning_keeps_only_what_changed():
    model = build()
    with tokenfunnel.compress(model, "pvc-tokens", token_threshold=0.99) as handle:
        logits(model, clip_prompt([3, 2, 2, 4], [0, 0, 1]))
        report = handle.report()
    assert report["temporal"]["merged_frames"] == [3]
    assert PATCHES < report["temporal"]["tokens_after"][0] <= 2 * PATCHES  # frame 1 repeats frame 0 exactly
    # with frame folding off, each frame is still measured against the one before (nothing folds at 1.0)
    [(_, repeat, cut)] = report["temporal"]["frame_similarity"]
    assert repeat == pytest.approx(1.0, abs=1e-4) and cut < 0.99


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(keep=0.25), "takes no keep"),
        (dict(frame_threshold=1.2), r"frame_threshold must be in \[0, 1\]"),
        (dict(token_threshold=-0.5), r"token_threshold must be in \[0, 1\]"),
        (dict(spatial=0.0), "spatial must be"),
        (dict(schedule=[(0.5, 0.5), (0.2, 0.3)]), "schedule depths"),
    ],
)
def test_bad_options_are_refused_before_anything_is_patched(options, message):
    model = build()
    with pytest.raises((ValueError, TypeError), match=message):
        tokenfunnel.compress(model, "pvc", **options)
    assert not hasattr(model, MARK)


def test_videos_with_different_frame_counts_in_one_batch_are_refused():
    model = build()
    samples = [sample_ids([3, 0, 4], images=2), sample_ids([3, 0, 0, 4], images=3)]
    inputs = batch([samples[0], samples[1]], images=1)
    inputs["pixel_values"] = video([0, 1, 0, 1, 2])
    with tokenfunnel.compress(model, "pvc"), pytest.raises(ValueError, match="same number of images"):
        logits(model, inputs)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3", "internvl"])
def test_temporal_stages_need_the_frames_of_a_video(family):
    """LLaVA's <image> runs and Qwen2-VL's video input are frames; Idefics3's and InternVL's images are tiles."""
    adapter = SimpleNamespace(family=family)
    PVC(PVCConfig(frame_threshold=None)).check(adapter)  # with both stages off, any family
    if family in ("llava", "qwen2_vl"):
        PVC(PVCConfig()).check(adapter)
    else:
        with pytest.raises(ValueError, match="images are tiles, so pass frame_threshold=None"):
            PVC(PVCConfig()).check(adapter)
