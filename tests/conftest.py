import pytest
import torch


@pytest.fixture(scope="session")
def bundled():
    """The trained bundled VLM and its processor, loaded once per test session."""
    import tokenfunnel

    return tokenfunnel.load_bundled(quiet=True)


@pytest.fixture(scope="session")
def astronaut():
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine torch's OpenMP workers
    contend with other processes: a forward then takes ~2 s instead of ~20 ms. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
