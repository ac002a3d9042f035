import torch

from tokenfunnel.data import easyvqa
from tokenfunnel.eval.scoring import END_OF_TURN, answer_logprobs, prompt_positions


def _full_sequence_logprob(model, processor, image, question, answer):
    """Reference: run prompt + answer + end-of-turn in one pass, no cache, and sum the answer log-probs."""
    tok = processor.tokenizer
    batch = processor([image], [question])
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids(END_OF_TURN)]
    ids = torch.cat([batch["input_ids"], torch.tensor([answer_ids])], dim=1)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits = model(
            input_ids=ids, pixel_values=batch["pixel_values"], attention_mask=mask, position_ids=prompt_positions(mask)
        ).logits
    logp = torch.log_softmax(logits[0].float(), dim=-1)
    start = batch["input_ids"].shape[1]
    return sum(logp[start - 1 + i, token].item() for i, token in enumerate(answer_ids))


def test_cached_scoring_equals_full_sequence_likelihood_for_multi_token_answers(bundled):
    model, processor = bundled
    sample = easyvqa.single_set(3, seed=2)[1]  # a shape question
    candidates = ["rectangle", "teal", "no"]  # 2, 2 and 1 tokens
    scores = answer_logprobs(model, processor, [sample.image], [sample.question], candidates)
    for index, answer in enumerate(candidates):
        reference = _full_sequence_logprob(model, processor, sample.image, sample.question, answer)
        assert abs(scores[0, index].item() - reference) < 1e-3


def test_batched_scoring_equals_one_question_at_a_time(bundled):
    model, processor = bundled
    samples = easyvqa.grid_set(3, seed=4)
    candidates = easyvqa.answers()
    together = answer_logprobs(model, processor, [s.image for s in samples], [s.question for s in samples], candidates)
    for row, sample in enumerate(samples):
        alone = answer_logprobs(model, processor, [sample.image], [sample.question], candidates)
        torch.testing.assert_close(together[row], alone[0], rtol=1e-4, atol=1e-3)
