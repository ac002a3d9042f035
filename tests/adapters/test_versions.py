"""compress refuses a transformers older than the oldest the adapters are tested with, before patching anything."""

from __future__ import annotations

import pytest
import transformers

import tokenfunnel
from adapters import test_qwen2_vl
from tiny import build
from tokenfunnel.adapters.versions import check_transformers, parse
from tokenfunnel.runtime.patch import MARK


@pytest.mark.parametrize("text, expected", [("5.23.0", (5, 23)), ("5.24.0.dev0", (5, 24)), ("6.0", (6, 0))])
def test_parse_reads_major_and_minor(text, expected):
    assert parse(text) == expected


def test_parse_refuses_what_is_not_a_version():
    with pytest.raises(ValueError, match="cannot read a transformers version"):
        parse("main")


def test_an_older_transformers_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(transformers, "__version__", "5.22.2")
    with pytest.raises(RuntimeError, match=r"needs transformers >= 5.23 \(found 5.22.2\): pip install -U"):
        check_transformers()
    for newer in ("5.23.0", "6.1.0"):
        monkeypatch.setattr(transformers, "__version__", newer)
        check_transformers()


@pytest.mark.parametrize("make", [build, lambda: test_qwen2_vl.build("qwen2_vl")], ids=["llava", "qwen2_vl"])
def test_compress_refuses_an_older_transformers_and_leaves_the_model_untouched(monkeypatch, make):
    model = make()
    monkeypatch.setattr(transformers, "__version__", "5.22.2")
    with pytest.raises(RuntimeError, match=r"needs transformers >= 5.23"):
        tokenfunnel.compress(model, "luvc", keep=0.25)
    assert not hasattr(model, MARK)
    monkeypatch.setattr(transformers, "__version__", "5.23.0")
    tokenfunnel.compress(model, "luvc", keep=0.25).remove()
