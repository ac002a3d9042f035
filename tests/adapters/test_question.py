"""The question of a LLaVA-style chat prompt: the text after the last image run, up to the end of the user's turn."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tokenfunnel.adapters.question import question_span, special_ids

IMAGE, START, END, PAD = 99, 1, 2, 0


def span(ids: list[int], config=SimpleNamespace(eos_token_id=END, bos_token_id=START, pad_token_id=PAD)) -> list[int]:
    t = torch.tensor(ids)
    ends, skip = special_ids(config)
    return t[question_span(t, (t != PAD).long(), t == IMAGE, ends, skip)].tolist()


def test_a_chat_prompt_gives_the_user_turn_after_the_image():
    # <pad> <|im_start|>system ... <|im_end|> <|im_start|>user <image>x3 \n How many ? <|im_end|> <|im_start|>assistant
    ids = [PAD, START, 10, 11, END, START, 12, IMAGE, IMAGE, IMAGE, 13, 20, 21, 22, END, START, 30, 13]
    assert span(ids) == [13, 20, 21, 22]


def test_without_an_end_of_turn_everything_after_the_last_image_is_the_question():
    assert span([5, IMAGE, IMAGE, 6, IMAGE, 7, 8]) == [7, 8]
    assert span([5, IMAGE, 7, 8], SimpleNamespace(eos_token_id=[2, 3], bos_token_id=None, pad_token_id=None)) == [7, 8]


@pytest.mark.parametrize("ids", [[5, 6, IMAGE, IMAGE], [5, IMAGE, END, 7, 8], [5, IMAGE, START, PAD, END]])
def test_no_question_after_the_image_is_refused(ids):
    with pytest.raises(ValueError, match="no question text after its last image"):
        span(ids)


def test_a_prompt_without_an_image_is_refused():
    with pytest.raises(ValueError, match="holds no image"):
        span([5, 6, 7])
