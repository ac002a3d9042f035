"""The baselines obey the guards LUVC does: keep=1 exact, remove() exact, a padded batch equals its samples alone,
generate() works, the realised keep is the requested one; and each does what its paper says it does."""

from __future__ import annotations

import pytest
import torch

import tokenfunnel
from tiny import PATCHES, build, generate, logits, pair, positions, prompt
from tokenfunnel.methods.registry import METHODS
from tokenfunnel.ops.attention import last_query_attention

DECODER = ("fastv", "pdrop", "dart", "random")
LAYERS = 6


def test_every_baseline_is_registered():
    assert set(DECODER) <= set(METHODS)


@pytest.mark.parametrize("method", DECODER)
def test_keep_one_is_bit_identical_and_remove_restores(method):
    model = build()
    inputs, _ = pair()
    ref, ref_gen = logits(model, inputs), generate(model, inputs)
    with tokenfunnel.compress(model, method, keep=1.0) as handle:
        assert torch.equal(logits(model, inputs), ref)
        assert torch.equal(generate(model, inputs), ref_gen)
        assert handle.report()["keep"] == 1.0
    handle = tokenfunnel.compress(model, method, keep=0.5)
    assert not torch.equal(logits(model, inputs), ref)
    handle.remove()
    assert torch.equal(logits(model, inputs), ref)


@pytest.mark.parametrize("method", DECODER)
def test_a_padded_batch_matches_each_prompt_alone_and_keep_is_realised(method):
    model = build()
    together, alone = pair()
    with tokenfunnel.compress(model, method, keep=0.5) as handle:
        last = logits(model, together)[:, -1]
        report = handle.report()
        gen = generate(model, together)
        for row, one in enumerate(alone):
            torch.testing.assert_close(last[row], logits(model, one)[0, -1], atol=1e-4, rtol=0)
            assert [layer[row] for layer in report["kept"]] == [layer[0] for layer in handle.report()["kept"]]
            assert torch.equal(gen[row], generate(model, one)[0])
    assert len(report["llm_visual_tokens"]) == LAYERS
    assert abs(report["keep"] - 0.5) <= 1 / PATCHES, report["llm_visual_tokens"]


def test_schedules_drop_where_the_papers_do():
    model = build()
    expect = {
        "fastv": lambda n: n[:2] == [PATCHES] * 2 and len(set(n[2:])) == 1,
        "dart": lambda n: n[:2] == [PATCHES] * 2 and len(set(n[2:])) == 1,
        "random": lambda n: len(set(n)) == 1 and n[0] == round(0.5 * PATCHES),
        # stages at int(6 * f) = layers 1, 3, 4 for f = 1/4, 1/2, 3/4
        "pdrop": lambda n: n[0] == PATCHES and n[1] == n[2] > n[3] > n[4] == n[5],
    }
    for method, ok in expect.items():
        with tokenfunnel.compress(model, method, keep=0.5) as handle:
            logits(model, prompt())
            counts = handle.report()["llm_visual_tokens"]
        assert ok(counts), (method, counts)


def test_a_keep_a_method_cannot_reach_is_refused_before_patching():
    model = build()
    with pytest.raises(ValueError, match="pdrop cannot reach keep 0.1"):
        tokenfunnel.compress(model, "pdrop", keep=0.1)
    with pytest.raises(ValueError, match="fastv cannot reach keep 0.2"):
        tokenfunnel.compress(model, "fastv", keep=0.2, layer=2)  # 2 of 6 layers already hold every token
    with pytest.raises(ValueError, match="outside this 6-layer"):
        tokenfunnel.compress(model, "dart", layer=6)
    assert "forward" not in model.__dict__
    tokenfunnel.compress(model, "pdrop", keep=0.1, stages=(0.0, 0.3, 0.6)).remove()


def test_hand_computed_last_token_attention_equals_eager_attention_weights():
    model = build(attn="eager")
    inputs, _ = pair()
    lm = model.model.language_model
    captured = {}
    layer_index = 2

    def grab(_module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        captured["rope"] = kwargs["position_embeddings"]

    hook = lm.layers[layer_index].register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        out = model(**inputs, position_ids=positions(inputs["attention_mask"]), output_attentions=True)
    hook.remove()
    eager = out.attentions[layer_index][:, :, -1].mean(1)  # (B, T) last query row, averaged over heads
    valid = inputs["attention_mask"].bool()
    with torch.no_grad():
        ours = last_query_attention(lm.layers[layer_index], captured["hidden"], valid, captured["rope"])
    torch.testing.assert_close(ours, eager.float(), atol=1e-5, rtol=1e-4)


def test_fastv_keeps_the_tokens_the_last_token_attends_to():
    model = build()
    inputs = prompt()
    lm = model.model.language_model
    captured = {}
    hook = lm.layers[2].register_forward_pre_hook(
        lambda _m, a, k: captured.update(hidden=a[0] if a else k["hidden_states"], rope=k["position_embeddings"]),
        with_kwargs=True,
    )
    logits(model, inputs)
    hook.remove()
    visual = (inputs["input_ids"][0] == model.config.image_token_id).nonzero()[:, 0]
    with torch.no_grad():
        weights = last_query_attention(
            lm.layers[2], captured["hidden"], inputs["attention_mask"].bool(), captured["rope"]
        )
    with tokenfunnel.compress(model, "fastv", keep=0.5) as handle:
        logits(model, inputs)
        report = handle.report()
    kept = set(report["kept"][2][0])
    best = set(weights[0, visual].topk(report["llm_visual_tokens"][2]).indices.tolist())
    assert kept == best


def test_random_draws_the_same_subset_for_every_image_and_seed_changes_it():
    model = build()
    subsets = []
    for seed in (0, 0, 1):
        with tokenfunnel.compress(model, "random", keep=0.25, seed=seed) as handle:
            logits(model, pair()[0])
            subsets.append(handle.report()["kept"][0])
    assert subsets[0][0] == subsets[0][1] and subsets[0] == subsets[1] and subsets[0] != subsets[2]


def test_dart_keeps_its_pivots_and_scores_copies_of_a_pivot_lowest():
    from tokenfunnel.methods.dart import DART, DARTConfig
    from tokenfunnel.ops.attention import keys
    from tokenfunnel.runtime.state import ScoreInput

    layer = build().model.language_model.layers[2]
    g = torch.Generator().manual_seed(0)
    seq = torch.randn(1, 20, 64, generator=g)
    at = torch.arange(4, 16)[None]  # 12 visual tokens between text
    with torch.no_grad():
        norms = keys(layer, seq).norm(dim=(1, 3))[0, 4:16]
        pivot = int(norms.argmax())
        copies = [i for i in range(12) if i != pivot][:3]
        for i in copies:  # exact copies of the pivot: as alike to it as a token can be
            seq[0, 4 + i] = seq[0, 4 + pivot]
        inputs = ScoreInput(seq[:, 4:16], at - 4, [(3, 4)], layer, 2, seq, at, torch.ones(1, 20, dtype=torch.bool))
        scores = DART(DARTConfig(pivots=1, text_pivots=0)).score(inputs)[0]
    # the copies share the pivot's key norm, so one of them may be the pivot; the others score lowest of all
    best = int(scores.argmax())
    assert best == pivot or best in copies
    lowest = set(scores.argsort()[:2].tolist())
    assert lowest <= set(copies + [pivot]) - {best}
