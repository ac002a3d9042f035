import json

import pytest
from typer.testing import CliRunner

from tokenfunnel.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--dataset", "coco", "--samples", "5"], "unknown dataset 'coco'"),
        (["eval", "--dataset", "easyvqa", "--samples", "0"], "--samples must be a positive"),
        (["eval", "--dataset", "easyvqa", "--samples", "-3"], "--samples must be a positive"),
        (["demo", "--question", "   "], "the question is empty"),
        (["demo", "--image", "no/such/picture.png"], "image not found"),
        (["demo", "--method", "zip"], "unknown method 'zip'"),
        (["demo", "--keep", "0"], "--keep must be in (0, 1]"),
        (["eval", "--dataset", "easyvqa", "--keep", "1.5", "--method", "luvc"], "--keep must be in (0, 1]"),
        (["show", "--image", "x.png", "--question", "q", "--out", "kept.jpg"], "--out must end in .png"),
        (["show", "--image", "x.png", "--question", "q", "--method", "none"], "--method none compresses nothing"),
        (["eval", "--dataset", "easyvqa-clips", "--method", "pvc", "--keep", "0.5"], "pvc takes no --keep"),
        (["demo", "--video", "v.avi", "--image", "x.png"], "pass --image or --video, not both"),
        (["demo", "--frames", "8"], "pass --video PATH too"),
        (["demo", "--video", "no/such/video.avi"], "no/such/video.avi"),
        (
            ["eval", "--dataset", "easyvqa", "--method", "detail", "--option", "views=pool"],
            "detail has no option 'views'",
        ),
        (["demo", "--method", "luvc", "--option", "cutoff"], "--option takes NAME=VALUE"),
        (["eval", "--dataset", "easyvqa", "--option", "view=pool"], "pick a --method too"),
    ],
)
def test_bad_input_gives_one_clear_line_and_a_nonzero_exit(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unreadable_image_is_refused(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    result = runner.invoke(app, ["demo", "--image", str(broken)])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_eval_json_row(bundled):
    result = runner.invoke(app, ["eval", "--dataset", "easyvqa-grid", "--samples", "6", "--seed", "1", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["rows"]
    assert {k: row[k] for k in ("method", "keep", "dataset", "samples")} == {
        "method": "none",
        "keep": 1.0,
        "dataset": "easyvqa-grid",
        "samples": 6,
    }
    assert 0.0 <= row["accuracy"] <= 1.0


def test_demo_json_on_a_user_image(bundled, tmp_path, astronaut):
    path = tmp_path / "astronaut.png"
    astronaut.save(path)
    result = runner.invoke(app, ["demo", "--image", str(path), "--question", "What color is the shape?", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    out = data["uncompressed"]
    assert set(out) == {"answer", "visual_tokens", "prefill_s"}
    assert out["visual_tokens"] == 256
    assert out["prefill_s"] > 0
    assert out["answer"]
    squeezed = data["compressed"]  # luvc at keep 0.25 by default
    assert squeezed["method"] == "luvc"
    layers = squeezed["llm_visual_tokens"]  # the defaults on LLaVA: one drop after the encoder, held to the last layer
    assert squeezed["visual_tokens"] == 64 and layers == [64] * len(layers)
    assert abs(squeezed["keep"] - 0.25) < 0.01
    assert squeezed["answer"]


def test_demo_json_gives_the_frozen_context_of_luvc_focus(bundled, tmp_path, astronaut):
    path = tmp_path / "astronaut.png"
    astronaut.save(path)
    question = "In the top-left picture, what color is the shape?"
    args = ["demo", "--image", str(path), "--question", question, "--method", "luvc-focus", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    squeezed = json.loads(result.stdout)["compressed"]
    layers, frozen = squeezed["llm_visual_tokens"], squeezed["llm_context_tokens"]
    assert layers[0] == 256 and layers[-1] < 64  # hold: every token first, then part of the named tile
    assert frozen[0] == 0 and max(frozen) > 0 and squeezed["keep"] <= 0.25 + 1e-6


def test_show_draws_the_kept_regions(bundled, tmp_path, astronaut):
    path, out = tmp_path / "astronaut.png", tmp_path / "kept.png"
    astronaut.save(path)
    args = ["show", "--image", str(path), "--question", "What color is the shape?", "--keep", "0.25", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
    assert "keep 0.250" in result.output


def test_method_options_reach_the_method_and_a_bad_value_is_one_line(bundled, tmp_path, astronaut):
    path = tmp_path / "astronaut.png"
    astronaut.save(path)
    args = ["demo", "--image", str(path), "--method", "detail", "--option", "details=always", "--json"]
    result = runner.invoke(app, [*args, "--option", "global_grid=[4, 4]"])
    assert result.exit_code == 0, result.output
    squeezed = json.loads(result.stdout)["compressed"]
    assert squeezed["visual_tokens"] == 64 and squeezed["encoder_keep"] == 1.0  # the budget; pooled: one pass
    result = runner.invoke(app, [*args, "--option", "view=image", "--option", "global_grid=[4, 4]"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["compressed"]["encoder_keep"] > 1.0  # the small image is encoded too
    result = runner.invoke(app, [*args, "--option", "view=crop"])
    assert result.exit_code == 2 and "view must be one of" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "luvc", "--option", "cutoff=2"], "luvc: cutoff must be in (0, 1]"),
        (["--method", "pdrop", "--keep", "0.05"], "pdrop: "),  # a keep the method cannot reach, without options
    ],
)
def test_eval_refuses_before_asking_any_question(bundled, monkeypatch, args, message):
    from tokenfunnel.eval import runner as eval_runner

    monkeypatch.setattr(eval_runner, "evaluate", lambda *a, **k: pytest.fail("evaluated despite a refusal"))
    result = runner.invoke(app, ["eval", "--dataset", "easyvqa", "--samples", "4", *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
