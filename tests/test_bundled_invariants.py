"""The correctness rules every method keeps, checked on the bundled VLM (the tiny models of ``tests/adapters`` check
each family): keep=1.0 answers exactly as the untouched model and ``remove()`` restores it; a left-padded batch that
mixes the kinds of prompt a method treats differently (a mosaic whose question names a tile, a single picture, a
mosaic whose question names none) answers as each prompt alone. Here a batch mixing a held and an unheld sample once
froze fewer tokens than the sample alone (luvc-focus), and detail at keep 1.0 once dropped tokens for questions that
wanted no details. The same batch check runs on three 4-frame videos. luvc and luvc-focus on pictures run in every
test run, the rest under ``-m slow`` (~9 min)."""

from __future__ import annotations

import pytest
import torch

import tokenfunnel
from tokenfunnel.data import easyvqa
from tokenfunnel.methods.registry import METHODS, processor_options, takes_keep


def _cases() -> list:
    cases = []
    for method in METHODS:
        keeps = [None] if not takes_keep(method) else [0.25] if method in ("lod", "pdrop") else [0.25, 0.11]
        cases += [(method, keep, {}) for keep in keeps]
    cases += [
        ("luvc", 0.25, dict(grid_keep=None, shape="linear", final_zero=True)),
        ("luvc", 0.25, dict(stage="llm", context="frozen")),
        ("luvc-focus", 0.25, dict(context="none")),
    ]
    fast = {("luvc", 0.25), ("luvc-focus", 0.25)}  # the default and the flagship preset run in every test run

    def param(method, keep, options):
        name = "-".join([method, str(keep), *map(str, options.values())])
        slow = (method, keep) not in fast or options
        return pytest.param(method, keep, options, id=name, marks=[pytest.mark.slow] if slow else [])

    return [param(*case) for case in cases]


@pytest.fixture(scope="module")
def mixed():
    grid = easyvqa.load_set("easyvqa-grid", 3, seed=5)
    single = easyvqa.load_set("easyvqa", 1, seed=5)
    images = [grid[0].image, single[0].image, grid[1].image, grid[2].image]
    questions = [grid[0].question, single[0].question, "Is there a rectangle in any of the pictures?", grid[2].question]
    return images, questions


@pytest.fixture(scope="module")
def clips():
    """Three 4-frame videos: the last frame a cut to another picture, one picture throughout, a cut half way."""
    grid = easyvqa.load_set("easyvqa-grid", 3, seed=5)
    single = easyvqa.load_set("easyvqa", 1, seed=5)
    a, b, c = (item.image for item in grid)
    videos = [[a, b, b, single[0].image], [single[0].image] * 4, [c, c, a, a]]
    return videos, ["In the last picture, what shape is there?", single[0].question, "what color is the shape?"]


@pytest.mark.parametrize(("method", "keep", "options"), _cases())
def test_a_mixed_batch_answers_as_its_prompts_alone(bundled, mixed, method, keep, options):
    _answers_as_alone(bundled, mixed, method, keep, options)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "keep", "options"), _cases())
def test_a_batch_of_videos_answers_as_each_video_alone(bundled, clips, method, keep, options):
    _answers_as_alone(bundled, clips, method, keep, options)


def _answers_as_alone(bundled, prompts, method, keep, options):
    model, processor = bundled
    images, questions = prompts
    options = {**processor_options(method, processor), **options}
    with torch.no_grad(), tokenfunnel.compress(model, method, keep=keep, **options):
        batch = processor(images, questions)
        last = model(**batch).logits[:, -1]
        answers = model.generate(**batch, max_new_tokens=3, do_sample=False)[:, batch["input_ids"].shape[1] :]
        for row, (image, question) in enumerate(zip(images, questions, strict=True)):
            alone = processor([image], [question])
            torch.testing.assert_close(last[row], model(**alone).logits[0, -1], atol=1e-3, rtol=0)
            own = model.generate(**alone, max_new_tokens=3, do_sample=False)[0, alone["input_ids"].shape[1] :]
            assert torch.equal(answers[row, : own.shape[0]], own), (row, question)


@pytest.mark.parametrize(
    "method",
    [m if m in ("luvc", "luvc-focus") else pytest.param(m, marks=pytest.mark.slow) for m in METHODS if takes_keep(m)],
)
def test_keep_one_is_the_untouched_model_and_remove_restores_it(bundled, mixed, method):
    model, processor = bundled
    batch = processor(*mixed)
    with torch.no_grad():
        reference = model(**batch).logits
        answers = model.generate(**batch, max_new_tokens=3, do_sample=False)
        with tokenfunnel.compress(model, method, keep=1.0, **processor_options(method, processor)) as handle:
            assert torch.equal(model(**batch).logits, reference)
            assert torch.equal(model.generate(**batch, max_new_tokens=3, do_sample=False), answers)
            assert handle.report()["keep"] == 1.0
        assert torch.equal(model(**batch).logits, reference)
