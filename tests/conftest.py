import pytest


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
