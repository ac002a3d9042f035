import torch

from tokenfunnel.data import easyvqa
from tokenfunnel.eval.scoring import prompt_positions
from tokenfunnel.models.train import ChatEncoder, image_features, pack


def test_packed_turns_are_each_the_single_question_chat_the_model_is_scored_on(bundled):
    """Training packs several questions after one image prefix; each must see exactly what evaluation feeds."""
    model, processor = bundled
    image = easyvqa.load_image("train", 0)
    turns = [
        ("what color is the shape?", "blue"),
        ("what shape is in the image?", "rectangle"),
        ("is there a red shape?", "no"),
    ]
    encoder = ChatEncoder(processor, 256)
    row = encoder.encode(turns)
    batch = pack([row], processor.tokenizer.pad_token_id)
    prefix = [t for t, turn in zip(row["ids"], row["turn"], strict=True) if turn == -1]
    lm = model.model.language_model
    with torch.no_grad():
        visual = model.model.multi_modal_projector(image_features(model, processor, [image]).float())
        ids = batch["ids"]
        embeds = lm.get_input_embeddings()(ids).masked_scatter((ids == processor.image_token_id)[..., None], visual)
        hidden = lm(inputs_embeds=embeds, attention_mask=batch["mask"], position_ids=batch["positions"])
        packed = model.lm_head(hidden.last_hidden_state[batch["source_rows"], batch["source_tokens"]])
        firsts = [0]  # index of each turn's first answer token among the targets
        for _, answer in turns[:-1]:
            firsts.append(firsts[-1] + len(encoder.ids(answer)) + 1)
        for index, ((question, answer), first) in enumerate(zip(turns, firsts, strict=True)):
            alone = processor([image], [question])
            # the eval prompt, token for token: the prefix, then this turn up to where its answer starts
            own = [t for t, turn in zip(row["ids"], row["turn"], strict=True) if turn == index]
            expected = prefix + own[: alone["input_ids"].shape[1] - len(prefix)]
            assert alone["input_ids"][0].tolist() == expected
            logits = model(**alone, position_ids=prompt_positions(alone["attention_mask"])).logits[0, -1]
            torch.testing.assert_close(packed[first], logits, rtol=1e-3, atol=1e-3)
            assert int(batch["targets"][first]) == encoder.ids(answer)[0]


def test_shared_turns_are_one_causal_chat(bundled):
    _, processor = bundled
    encoder = ChatEncoder(processor, 4, separate=False)
    row = encoder.encode([("q one?", "yes"), ("q two?", "no")])
    batch = pack([row, encoder.encode([("q?", "red")])], processor.tokenizer.pad_token_id)
    n = len(row["ids"])
    assert row["positions"] == list(range(n))
    allowed = batch["mask"][0, 0] == 0
    assert torch.equal(allowed[:n, :n], torch.ones(n, n, dtype=torch.bool).tril())
    short = batch["mask"][1, 0] == 0
    assert short.any(-1).all()  # padding rows still see themselves
