"""Closed-set answer scoring: the LM's log-likelihood of each of the 13 easy-VQA answers.

One prefill per question; each candidate answer (its tokens and the end-of-turn token) is then scored by
continuing from the prefill's KV cache, which is cropped back after each candidate. Exact (multi-token answers
such as "rectangle" are scored in full) and cheap (candidates are 1-3 tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tokenfunnel.ops.positions import prompt_positions
from tokenfunnel.runtime.cache import CACHE, cache_of

END_OF_TURN = "<|im_end|>"


@torch.no_grad()
def answer_logprobs(model, processor, images, questions: Sequence[str], candidates: Sequence[str]) -> torch.Tensor:
    """(batch, candidates) summed log-probabilities of each candidate answer followed by the end of turn."""
    tok = processor.tokenizer
    batch = processor(images, questions)
    mask = batch["attention_mask"]
    # Only the last position's logits are read; computing the rest is a fifth of a small LM's prefill.
    out = model(**batch, position_ids=prompt_positions(mask), use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    cache = cache_of(out)
    lengths = mask.sum(-1)
    scores = torch.empty(len(questions), len(candidates))
    for index, answer in enumerate(candidates):
        ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids(END_OF_TURN)]
        total = first[:, ids[0]].clone()
        fed = torch.tensor(ids[:-1], device=mask.device).expand(len(questions), -1)
        step_mask = torch.cat([mask, torch.ones_like(fed)], dim=-1)
        positions = lengths[:, None] + torch.arange(fed.shape[1], device=mask.device)
        logits = model(
            input_ids=fed, attention_mask=step_mask, position_ids=positions, use_cache=True, **{CACHE: cache}
        ).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for offset, token in enumerate(ids[1:]):
            total += logp[:, offset, token]
        cache.crop(-fed.shape[1])
        scores[:, index] = total
    return scores


def predict(model, processor, images, questions: Sequence[str], candidates: Sequence[str]) -> list[str]:
    scores = answer_logprobs(model, processor, images, questions, candidates)
    return [candidates[i] for i in scores.argmax(-1).tolist()]
