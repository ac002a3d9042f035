"""Qwen2-VL / Qwen2.5-VL video input on a compressed model, on the tiny random models of test_qwen2_vl: exact where
nothing is compressed, the rerun tower and OIM per temporal slice, padded batches equal to each video alone (also
when pvc's temporal stages leave the videos different counts), a folded video equal to the unmodified model with the
dropped slices masked out at the same M-RoPE positions, report() bookkeeping, and what stays refused."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

import tokenfunnel
from adapters.test_qwen2_vl import END, FAMILIES, IMAGE, PAD, START, VIDEO, _cpu, build  # noqa: F401 (_cpu: autouse)
from tokenfunnel.adapters.qwen2_vl import Qwen2VLAdapter
from tokenfunnel.ops.budget import stages
from tokenfunnel.runtime.apply import BOOK
from tokenfunnel.runtime.state import RUN

SIDE = (8, 12)  # patches of each temporal slice: a 4x6 grid of language-model cells
CELLS = SIDE[0] * SIDE[1] // 4
ROW = 3 * 2 * 2 * 2  # one patch row of pixel_values_videos: channels x temporal patch x patch x patch
# OIM with the falling cascade (the defaults have no OIM); the tiny towers have 2 blocks: merge from the first one
OIM = dict(keep=0.3, encoder_start=0.0, grid_keep=None, shape="linear", final_zero=True)
TEMPORAL = {
    "pvc": dict(frame_threshold=0.99, encoder_start=0.0),  # the tiny towers have 2 blocks
    "pvc-frames": dict(frame_threshold=0.99),
    "pvc-tokens": dict(token_threshold=0.99),
}


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    model = build(request.param)
    model.generation_config.eos_token_id = None  # no early stop on a random eos: every run emits as many tokens
    return model


def _video(pattern: list[int], seed: int, side: tuple[int, int] = SIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel rows of a video whose temporal slices repeat a few random pictures as ``pattern`` says (repeats are
    exact duplicates), and its grid (t, h, w) in patches."""
    g = torch.Generator().manual_seed(seed)
    pictures = torch.randn(max(pattern) + 1, side[0] * side[1], ROW, generator=g)
    return pictures[pattern].flatten(0, 1), torch.tensor([[len(pattern), *side]])


def _prompt(pattern: list[int], seed: int, pre: int, post: int = 4, side: tuple[int, int] = SIDE):
    g = torch.Generator().manual_seed(seed + 100)
    pixels, grid = _video(pattern, seed, side)
    run = [START] + [VIDEO] * (len(pattern) * side[0] * side[1] // 4) + [END]
    ids = (
        [1]
        + torch.randint(3, 90, (pre,), generator=g).tolist()
        + run
        + torch.randint(3, 90, (post,), generator=g).tolist()
    )
    return ids, pixels, grid


def _batch(model, *prompts):
    """Left-padded inputs as the processor builds them (Qwen2.5-VL: half a second per temporal slice)."""
    longest = max(len(p[0]) for p in prompts)
    ids = torch.tensor([[PAD] * (longest - len(p[0])) + p[0] for p in prompts])
    mask = torch.tensor([[0] * (longest - len(p[0])) + [1] * len(p[0]) for p in prompts])
    inputs = dict(
        input_ids=ids,
        attention_mask=mask,
        pixel_values_videos=torch.cat([p[1] for p in prompts]),
        video_grid_thw=torch.cat([p[2] for p in prompts]),
        mm_token_type_ids=2 * (ids == VIDEO).int(),
    )
    if isinstance(model, Qwen2_5_VLForConditionalGeneration):
        inputs["second_per_grid_ts"] = torch.full((len(prompts),), 0.5)
    return inputs


def _generate(model, inputs, n: int = 4):
    out = model.generate(**inputs, max_new_tokens=n, do_sample=False, output_logits=True, return_dict_in_generate=True)
    return out.sequences[:, -n:], torch.stack(out.logits, 1)


A, B = _prompt([0, 1, 2, 3], 0, pre=3), _prompt([0, 1, 2, 3], 1, pre=7)
# two videos that fold into 2 and 3 slices
FOLD_A, FOLD_B = _prompt([0, 0, 1, 1], 2, pre=3), _prompt([0, 1, 2, 2], 3, pre=7)


@pytest.mark.parametrize(
    "method, options",
    [
        ("luvc", dict(keep=1.0)),
        ("pvc", dict(spatial=1.0, frame_threshold=None, token_threshold=None, schedule=[(0, 1)])),
        ("pvc-frames", dict(frame_threshold=1.0)),
    ],
    ids=["luvc", "pvc-off", "pvc-frames-nothing-folds"],
)
def test_nothing_compressed_is_bit_identical(model, method, options):
    inputs = _batch(model, FOLD_A, B)
    logits = model(**inputs).logits
    tokens, scores = _generate(model, inputs)
    with tokenfunnel.compress(model, method, **options) as handle:
        assert torch.equal(model(**inputs).logits, logits)
        report = handle.report()
        again, again_scores = _generate(model, inputs)
    assert torch.equal(again, tokens) and torch.equal(again_scores, scores)
    assert report["keep"] == 1.0 and report["encoder_keep"] == 1.0
    assert report["grids"] == [[4, 6]] * 4 and report["original_visual_tokens"] == 4 * CELLS


def test_remove_restores(model):
    inputs = _batch(model, A)
    logits = model(**inputs).logits
    handle = tokenfunnel.compress(model, "luvc", **OIM)
    assert model(**inputs).logits.shape[1] < logits.shape[1]  # OIM shrank every slice's placeholder run
    handle.remove()
    assert not {"forward", "get_image_features", "get_video_features"} & set(vars(model.model))
    assert torch.equal(model(**inputs).logits, logits)


def test_tower_loop_matches_the_tower_on_videos(model):
    """A video is its temporal slices, attended one by one: the rerun loop over them is the tower on the video."""
    pixels, grid = _video([0, 1, 2], 4)
    more, other = _video([0, 1], 5, side=(4, 8))
    pixels, grid = torch.cat([pixels, more]), torch.cat([grid, other])
    slices = grid.repeat_interleave(grid[:, 0], dim=0)
    slices[:, 0] = 1
    adapter = Qwen2VLAdapter(model)
    runs = [adapter._start(h // 2, w // 2, {}, "cpu") for _, h, w in slices.tolist()]
    out, _, _ = adapter._tower(pixels, slices, runs)
    reference = model.model.visual(pixels, grid_thw=grid)
    assert torch.equal(torch.cat(out.pooler_output), reference.pooler_output)


def test_oim_merges_every_slice_of_a_video_to_one_grid(model):
    pixels, grid = _video([0, 1, 2], 4)
    more, other = _video([0, 1], 5, side=(4, 8))
    with tokenfunnel.compress(model, "luvc", keep=0.25, encoder_start=0.0, grid_keep=None):
        features = model.model.get_video_features(torch.cat([pixels, more]), torch.cat([grid, other]))
    run = getattr(features, RUN)
    assert run.merged and run.merged_thw[:, 0].tolist() == [3, 2] and bool((run.merged_thw[:, 1:] % 2 == 0).all())
    assert [len(f) for f in features.pooler_output] == (run.merged_thw.prod(-1) // 4).tolist()  # one per video
    assert len(run.runs) == 5 and all(r.grid == run.runs[0].grid for r in run.runs[:3])


@pytest.mark.parametrize(
    "method, options",
    [("luvc", OIM), ("luvc", dict(keep=0.25, grid_keep=1.0)), *TEMPORAL.items()],
    ids=["luvc-oim", "luvc-llm-only", *TEMPORAL],
)
def test_padded_batch_of_videos_equals_each_alone(model, method, options):
    """pvc's stages fold the two videos into 2 and 3 slices: the shorter is padded with masked slots."""
    with tokenfunnel.compress(model, method, **options) as handle:
        alone = []
        for p in (FOLD_A, FOLD_B):
            logits = model(**_batch(model, p)).logits
            alone.append((logits[0, -1], handle.report(), *_generate(model, _batch(model, p))))
        logits = model(**_batch(model, FOLD_A, FOLD_B)).logits
        report = handle.report()
        tokens, scores = _generate(model, _batch(model, FOLD_A, FOLD_B))
    ragged = method in TEMPORAL
    for i, (last, one, one_tokens, one_scores) in enumerate(alone):
        torch.testing.assert_close(logits[i, -1], last, atol=1e-4, rtol=1e-4)
        assert torch.equal(tokens[i], one_tokens[0])
        torch.testing.assert_close(scores[i], one_scores[0], atol=1e-4, rtol=1e-4)
        counts = report["llm_visual_tokens"][i] if ragged else report["llm_visual_tokens"]
        assert counts == one["llm_visual_tokens"]
        assert [cells[i] for cells in report["kept"]] == [cells[0] for cells in one["kept"]]
    if ragged and method != "pvc-tokens":
        assert report["temporal"]["merged_frames"] == [2, 3]


@pytest.mark.parametrize("method", ["pvc-frames", "pvc-tokens"])
def test_a_folded_video_equals_the_masked_model(model, method):
    """Slices [P, P, Q, P]: folding (or dropping the unchanged tokens of) slice 1 is exactly the unmodified model
    with slice 1's placeholders masked out, every other token at its own M-RoPE position (temporal row included);
    slice 3 is no repeat of slice 2, so it stays."""
    inputs = _batch(model, _prompt([0, 0, 1, 0], 6, pre=3))
    slices = (inputs["input_ids"][0] == VIDEO).nonzero()[:, 0].view(4, CELLS)
    positions, _ = model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs.get("second_per_grid_ts"),
        attention_mask=inputs["attention_mask"],
    )
    masked = dict(inputs, attention_mask=inputs["attention_mask"].clone(), position_ids=positions)
    masked["attention_mask"][0, slices[1]] = 0
    reference = model(**masked).logits[0, -1]
    ref_tokens, ref_scores = _generate(model, masked)
    with tokenfunnel.compress(model, method, **TEMPORAL[method]) as handle:
        out = model(**inputs).logits[0, -1]
        report = handle.report()
        tokens, scores = _generate(model, inputs)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=1e-5)
    assert report["llm_visual_tokens"] == [3 * CELLS] * 4


def test_report_temporal_bookkeeping(model):
    schedule = ((0.0, 1.0), (0.5, 0.5))
    with tokenfunnel.compress(model, "pvc", **TEMPORAL["pvc"], schedule=schedule) as handle:
        model(**_batch(model, FOLD_A, FOLD_B))
        report = handle.report()
    temporal = report["temporal"]
    h, w = report["grids"][0]
    per = h * w
    assert per < CELLS and report["grids"] == [[h, w]] * 3  # OIM merged each slice; the batch carries 3 slices
    assert temporal["frames"] == [4, 4] and temporal["merged_frames"] == [2, 3]
    assert temporal["frame_groups"] == [[0, 0, 1, 1], [0, 1, 2, 2]]
    assert temporal["tokens_before"] == [4 * per] * 2 and temporal["tokens_after"] == [2 * per, 3 * per]
    assert report["llm_visual_tokens"] == [stages(2 * per, 4, schedule), stages(3 * per, 4, schedule)]
    assert len(report["boxes"]) == 2 + 3  # one per merged slice of each video
    assert report["keep"] == pytest.approx(sum(report["keep_per_sample"]) / 2)


@pytest.mark.parametrize("method, options", [("luvc", OIM), ("pvc", TEMPORAL["pvc"])], ids=["luvc", "pvc"])
def test_decoding_continues_after_the_largest_position(model, method, options):
    """Decoding without position_ids continues where the unmodified model's get_rope_index deltas put it: after the
    largest position of any M-RoPE row, here the last slices' temporal position, past the short closing text (and
    pvc folds those slices away). transformers' generate() passes its own positions, which the model then takes."""
    inputs = _batch(model, _prompt([0, 1, 2, 2, 2, 2, 2, 2], 7, pre=3, post=1, side=(4, 4)))
    positions, deltas = model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs.get("second_per_grid_ts"),
    )
    assert positions[0].max() > positions[1:, :, -1].max()  # the temporal row runs past the text
    with tokenfunnel.compress(model, method, **options) as handle:
        out = model(**inputs, use_cache=True)
        step = model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values, use_cache=True)
        report = handle.report()
    book = getattr(out.past_key_values, BOOK)[1]
    assert book.next_position.tolist() == [[inputs["input_ids"].shape[1] + int(deltas)]] * 3
    assert step.logits.shape == (1, 1, 128)
    if method == "pvc":
        assert report["temporal"]["frame_groups"] == [[0, 1, 2, 2, 2, 2, 2, 2]]


def test_two_videos_in_one_prompt_without_temporal_stages(model):
    """Without temporal stages a prompt may hold several videos: each temporal slice is one grid of the layout."""
    first, second = _prompt([0, 1], 10, pre=2), _prompt([0, 1, 2], 11, pre=2, side=(4, 8))
    ids = torch.tensor([first[0] + second[0][1:]])
    inputs = dict(
        input_ids=ids,
        pixel_values_videos=torch.cat([first[1], second[1]]),
        video_grid_thw=torch.cat([first[2], second[2]]),
        mm_token_type_ids=2 * (ids == VIDEO).int(),
    )
    with tokenfunnel.compress(model, "luvc", **OIM) as handle:
        model(**inputs)
        report = handle.report()
    assert len(report["grids"]) == 2 + 3 and report["original_visual_tokens"] == 2 * CELLS + 3 * 8
    assert report["grids"][0] == report["grids"][1] and report["grids"][2] == report["grids"][4]
    assert report["encoder_keep"] < 1 and report["llm_visual_tokens"][-1] == 0


def test_an_image_is_a_one_frame_video(model):
    """Under pvc's temporal stages an image prompt runs as with the stages off: one frame has nothing to fold."""
    ids = [1, 5, 6, START] + [IMAGE] * CELLS + [END, 7, 8]
    g = torch.Generator().manual_seed(8)
    inputs = dict(
        input_ids=torch.tensor([ids]),
        pixel_values=torch.randn(SIDE[0] * SIDE[1], ROW, generator=g),
        image_grid_thw=torch.tensor([[1, *SIDE]]),
        mm_token_type_ids=(torch.tensor([ids]) == IMAGE).int(),
    )
    results = []
    for threshold in (0.99, None):
        with tokenfunnel.compress(model, "pvc", frame_threshold=threshold, encoder_start=0.0) as handle:
            results.append(model(**inputs).logits)
            assert "temporal" not in handle.report() and handle.report()["keep"] < 0.5
    assert torch.equal(*results)


def test_refusals(model):
    video = _batch(model, A)
    image_and_video = _prompt([0, 1], 9, pre=2)
    ids = torch.tensor([[START] + [IMAGE] * 2 + [END] + image_and_video[0]])
    with tokenfunnel.compress(model, "luvc", keep=0.5):
        with pytest.raises(NotImplementedError, match="images or videos in one call, not both"):
            model(
                input_ids=ids,
                pixel_values=torch.randn(8, ROW),
                image_grid_thw=torch.tensor([[1, 2, 4]]),
                pixel_values_videos=image_and_video[1],
                video_grid_thw=image_and_video[2],
            )
        with pytest.raises(ValueError, match="videos of the same grids"):
            model(**_batch(model, A, _prompt([0, 1, 2, 3], 1, pre=3, side=(12, 8))))
    with tokenfunnel.compress(model, "luvc", **OIM, proportional=True):
        with pytest.raises(NotImplementedError, match="proportional"):
            model(**video)
    two = _prompt([0, 1], 10, pre=2)
    ids = torch.tensor([two[0] + two[0][1:]])  # two videos in one prompt
    with tokenfunnel.compress(model, "pvc-frames"):
        with pytest.raises(NotImplementedError, match="one video per sample"):
            model(
                input_ids=ids,
                pixel_values_videos=torch.cat([two[1], two[1]]),
                video_grid_thw=torch.cat([two[2], two[2]]),
                mm_token_type_ids=2 * (ids == VIDEO).int(),
            )
