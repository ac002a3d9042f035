"""learned on tiny random LLaVAs (a small random compressor of the tiny model's width): batches equal their samples
alone, keep=1 is the unmodified model bit for bit, remove() restores it, the realised keep is the one asked for,
refusals, two steps of the distillation loop, and the committed weights."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

import tokenfunnel
from tiny import GRID, PATCHES, Said, assert_rows_match_alone, build, generate, logits, pair, prompt
from tokenfunnel.methods.learned import default_weights, load_compressor, save_compressor
from tokenfunnel.models.train_learned import Chats, answer_logprobs, distill
from tokenfunnel.ops.compressor import Compressor
from tokenfunnel.runtime.patch import MARK

ASKED = Said("What shape is it?")  # names no part of the picture: learned's focus changes nothing
WIDTH = 64  # the tiny language model's hidden size, so the projected tokens' width


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    c = Compressor(WIDTH, hidden=16)
    torch.nn.init.normal_(c.gate[-1].weight)  # folding is then more than a score-weighted mean
    path = tmp_path / "compressor.safetensors"
    save_compressor(c, path, {"seed": "0"})
    return path


@pytest.mark.parametrize("keep", [0.11, 0.5])
def test_a_batch_equals_each_sample_alone_and_generate_works(weights, keep):
    model = build()
    together, alone = pair()
    with tokenfunnel.compress(model, "learned", tokenizer=ASKED, keep=keep, weights=weights) as handle:
        out, gen = logits(model, together), generate(model, together)
        kept = handle.report()["kept"][0]
        for row, one in enumerate(alone):
            assert torch.allclose(out[row, -1], logits(model, one)[0, -1], atol=1e-5)
            assert torch.equal(gen[row], generate(model, one)[0])
            assert handle.report()["kept"][0][0] == kept[row]


@pytest.mark.parametrize("keep", [0.11, 0.25, 0.5])
def test_the_realised_keep_is_the_one_asked_for(weights, keep):
    model = build()
    with tokenfunnel.compress(model, "learned", tokenizer=ASKED, keep=keep, weights=weights) as handle:
        logits(model, prompt())
        report = handle.report()
    k = round(keep * PATCHES)
    assert report["visual_tokens"] == k and report["llm_visual_tokens"] == [k] * 6
    assert report["keep"] == pytest.approx(k / PATCHES) == pytest.approx(keep, abs=0.5 / PATCHES)
    assert report["stage"]["folded"] == [PATCHES - k]


def test_keep_one_is_the_unmodified_model_bit_for_bit_and_remove_restores_it(weights):
    model = build()
    together, _ = pair()
    ref, ref_gen = logits(model, together), generate(model, together)
    with tokenfunnel.compress(model, "learned", tokenizer=ASKED, keep=1.0, weights=weights) as handle:
        assert torch.equal(logits(model, together), ref) and torch.equal(generate(model, together), ref_gen)
        assert handle.report()["keep"] == 1.0
    handle = tokenfunnel.compress(model, "learned", tokenizer=ASKED, keep=0.25, weights=weights)
    assert not torch.equal(logits(model, together), ref)
    handle.remove()
    assert torch.equal(logits(model, together), ref) and torch.equal(generate(model, together), ref_gen)
    assert not hasattr(model, MARK)


def test_missing_corrupt_and_misfit_weights_are_refused_in_one_line(tmp_path, weights):
    model = build()
    with pytest.raises(FileNotFoundError, match=r"make train-learned") as err:
        tokenfunnel.compress(model, "learned", tokenizer=ASKED, weights=tmp_path / "none.safetensors")
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"cannot read the learned compressor .*make train-learned") as err:
        tokenfunnel.compress(model, "learned", tokenizer=ASKED, weights=bad)
    assert "\n" not in str(err.value)
    wide = tmp_path / "wide.safetensors"
    save_compressor(Compressor(2 * WIDTH, hidden=8), wide, {})
    with pytest.raises(ValueError, match=r"trained for 128-wide projected tokens.*takes 64"):
        tokenfunnel.compress(model, "learned", tokenizer=ASKED, weights=wide)
    assert not hasattr(model, MARK)


@pytest.mark.parametrize(
    "keep, message", [(0.0, r"keep must be in \(0, 1\]"), (1.5, "keep must be"), (0.001, "no token")]
)
def test_keep_out_of_range_is_refused_before_anything_is_patched(weights, keep, message):
    model = build()
    with pytest.raises(ValueError, match=message):
        tokenfunnel.compress(model, "learned", tokenizer=ASKED, keep=keep, weights=weights)
    assert not hasattr(model, MARK)


def test_two_distillation_steps_run_and_move_the_compressor():
    model = build()
    model.requires_grad_(False)
    chats = Chats(None, [5, 6, 7], PATCHES, [10, 11, 12, 13])
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(3):
        text = torch.randint(3, 100, (9,), generator=g).tolist()
        rows.append((text, [3 + PATCHES + 2, 3 + PATCHES + 7]))  # two answers, predicted inside the text
    feats = torch.randn(3, PATCHES, WIDTH, generator=g)
    with torch.no_grad():
        teacher = list(answer_logprobs(model, chats, feats, rows).split(2))
    torch.manual_seed(0)
    c = Compressor(WIDTH, hidden=8)
    before = [p.detach().clone() for p in c.parameters()]
    args = SimpleNamespace(steps=2, batch=2, keep_range=(0.1, 0.3), lr=1e-2, warmup=1)
    log = distill(model, chats, feats, rows, teacher, c, args, random.Random(0))
    assert [row["step"] for row in log] == [1, 2] and all(row["kl"] >= 0 for row in log)
    assert any(not torch.equal(a, b) for a, b in zip(before, c.parameters(), strict=True))


def test_the_committed_weights_fit_the_bundled_vlm_and_say_how_they_were_made():
    compressor, meta = load_compressor(default_weights())
    assert compressor.dim == 576  # SmolLM2-135M's hidden size
    assert meta["seed"] == "0" and "keep_range" in meta["config"]


def test_first_tokens_are_kept_before_any_other_and_the_merge_weights_ignore_them():
    torch.manual_seed(1)
    c = Compressor(WIDTH, hidden=16)
    x = torch.randn(2, 1, 12, WIDTH)
    score = c.scores(x)
    first = torch.zeros(2, 12, dtype=torch.bool)
    first[:, 6:] = True
    _, cells, _ = c(x, 4, first)
    for row in range(2):
        inside = score[row, 6:].topk(4).indices.sort().values + 6
        assert torch.equal(cells[row], inside)
    _, all_first, _ = c(x, 8, first)  # every first token, then the two best of the rest
    for row in range(2):
        assert set(all_first[row].tolist()) == set(range(6, 12)) | set(score[row, :6].topk(2).indices.tolist())
    assert torch.equal(c(x, 4, torch.zeros_like(first))[0], c(x, 4)[0])


def test_focus_keeps_the_named_quarter_first_and_a_batch_equals_its_samples(weights):
    model = build()
    together, alone = pair()
    said = Said("In the top-left picture, what shape is there?")
    quarter = {r * GRID[1] + c for r in range(GRID[0] // 2) for c in range(GRID[1] // 2)}
    with tokenfunnel.compress(model, "learned", keep=0.25, weights=weights, tokenizer=said) as handle:
        last, gen = logits(model, together)[:, -1], generate(model, together)
        report = handle.report()
        assert_rows_match_alone(model, alone, last, gen)
    assert report["stage"]["focus"] == ["top-left", "top-left"]
    assert all(set(report["kept"][row][0]) == quarter for row in range(2))  # 16 tokens: the quarter's 16 cells
    with tokenfunnel.compress(model, "learned", keep=0.25, weights=weights, focus=False) as handle:
        blind = logits(model, together)
        assert set(handle.report()["kept"][0][0]) != quarter
    with tokenfunnel.compress(model, "learned", keep=0.25, weights=weights, tokenizer=ASKED) as h:
        assert torch.equal(logits(model, together), blind) and h.report()["stage"]["focus"] == ["none", "none"]


def test_focus_without_a_tokenizer_is_refused_before_anything_is_patched(weights):
    model = build()
    with pytest.raises(ValueError, match="pass the processor's tokenizer"):
        tokenfunnel.compress(model, "learned", weights=weights)
    assert not hasattr(model, MARK)
