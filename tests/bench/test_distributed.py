"""Two CPU processes under torchrun (gloo) shard the questions; rank 0's merged result equals one process's."""

import json
import os
import subprocess
import sys

from .helpers import folder_args


def test_two_ranks_equal_one(folder_sweep, tiny_folder, tmp_path):
    single_out, single = folder_sweep
    out = tmp_path / "two-ranks"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "tokenfunnel", *map(str, folder_args(tiny_folder, out))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    merged = json.loads(done.stdout)  # rank 0 alone prints, and only the JSON
    assert merged["config"]["ranks"] == 2
    for ours, theirs in zip(merged["rows"], single["rows"], strict=True):
        assert (ours["method"], ours["keep"], ours["samples"]) == (theirs["method"], theirs["keep"], 4)
        assert ours["accuracy"] == theirs["accuracy"]
        assert ours["accuracy_by_kind"] == theirs["accuracy_by_kind"]
    for setting in ("none@1", "luvc@0.5"):
        ours = json.loads((out / "bench-progress" / "accuracy" / f"{setting}.json").read_text())
        theirs = json.loads((single_out / "bench-progress" / "accuracy" / f"{setting}.json").read_text())
        assert ours == theirs  # the same answer to every question, in question order
