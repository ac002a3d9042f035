"""`--model PATH`: a local transformers VLM folder, its questions through the processor's chat template."""


def test_folder_model_rows(folder_sweep, tiny_folder):
    _, data = folder_sweep
    none, luvc = data["rows"]
    assert none["model"] == luvc["model"] == str(tiny_folder)
    assert none["visual_tokens"] == 64 and len(none["llm_visual_tokens"]) == none["layers"] == 4
    assert 0 <= none["accuracy"] <= 1 and none["encoder_tokens"] == [65] * 4
    assert luvc["flops_ideal_speedup"] > 1 and luvc["realised_keep"] < 1
    assert all(row["ttft_s"] > 0 and row["decode_tok_s"] > 0 for row in (none, luvc))
