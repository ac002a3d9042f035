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
            # equal up to fp32 summation order (the 4D mask takes another attention path): a turn that saw another
            # turn would move these probabilities by far more
            torch.testing.assert_close(packed[first].softmax(-1), logits.softmax(-1), rtol=0, atol=2e-3)
            assert int(packed[first].argmax()) == int(logits.argmax())
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


def test_whitening_folds_into_a_plain_first_layer_and_unfolds_back():
    from tokenfunnel.models.train import Whitening

    g = torch.Generator().manual_seed(0)
    features = torch.randn(40, 16, 8, generator=g) * torch.tensor([50.0, 1, 1, 1, 0.3, 1, 1, 1]) + 3
    whiten = Whitening(features, samples=1000)  # every token: estimated on the data it is checked on
    white = whiten(features.flatten(0, 1))
    # whitened: every direction, the huge channel and the faint one alike, near unit variance (the ridge shaves a
    # little off the faint one) and uncorrelated
    cov = torch.cov(white.T)
    assert ((cov.diagonal() > 0.85) & (cov.diagonal() < 1.01)).all()
    assert (cov - torch.diag(cov.diagonal())).abs().max() < 0.05
    layer = torch.nn.Linear(8, 5)
    weight, bias = whiten.fold(layer.weight.detach(), layer.bias.detach())
    raw = features.flatten(0, 1)
    torch.testing.assert_close(raw @ weight.T + bias, layer(white.float()).detach(), rtol=1e-4, atol=1e-4)
    back = whiten.unfold(weight, bias)
    torch.testing.assert_close(back[0], layer.weight.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(back[1], layer.bias.detach(), rtol=1e-4, atol=1e-4)
