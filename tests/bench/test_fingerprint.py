"""A resumed sweep never reuses parts measured on other weights: the sweep's identity holds their fingerprint."""

from __future__ import annotations

import json
import os

from tokenfunnel.bench.models import SHAPE, fingerprint

from .helpers import TINY, invoke, one_clear_line


def test_a_folder_fingerprint_follows_its_weight_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"1234")
    first = fingerprint(str(tmp_path))
    assert fingerprint(str(tmp_path)) == first
    (tmp_path / "notes.txt").write_text("not weights")
    assert fingerprint(str(tmp_path)) == first
    weights.write_bytes(b"12345")
    resized = fingerprint(str(tmp_path))
    assert resized != first
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same name and size, touched
    assert fingerprint(str(tmp_path)) != resized


def test_the_bundled_fingerprint_is_its_shipped_files_content():
    assert fingerprint("bundled") == fingerprint("bundled") != fingerprint(SHAPE)


def test_a_sweep_measured_on_other_weights_is_refused_not_resumed(tmp_path):
    progress = tmp_path / "bench-progress"
    progress.mkdir()
    (progress / "config.json").write_text(json.dumps({"model": "bundled", "weights": "0123456789abcdef"}))
    result = invoke([*TINY, "--out", tmp_path])
    one_clear_line(result, "holds a sweep of another configuration")
    assert "weights '0123456789abcdef' (now " in result.output
