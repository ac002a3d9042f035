"""The CPU live-bytes tracker sees what a block allocates above its start, once per storage."""

import torch

from tokenfunnel.bench.memory import LiveBytes, peak_bytes

MB4 = 1000 * 1000 * 4  # a 1000 x 1000 float32 tensor


def test_a_known_allocation_is_the_peak():
    def run():
        a = torch.ones(1000, 1000)
        return a.sum()

    peak, total = peak_bytes(run, torch.device("cpu"))
    assert MB4 <= peak <= MB4 + 64
    assert total.item() == 1e6


def test_freed_storage_is_subtracted_and_views_are_not_counted_twice():
    with LiveBytes() as live:
        a = torch.ones(1000, 1000)
        view = a[:10].view(-1)  # same storage
        a.mul_(2)  # in place: same storage
        del a
        b = torch.zeros(1000, 1000)  # a's storage is alive through the view: 8 MB at once
        del view
        c = torch.zeros(1000, 1000)  # a's storage is gone: still 8 MB
        assert live.current == 2 * MB4
    assert live.peak == 2 * MB4
    del b, c


def test_weights_and_their_views_are_excluded():
    weight = torch.randn(1000, 1000)
    x = torch.randn(1, 1000)

    def run():
        return torch.nn.functional.linear(x, weight)  # weight.t() is a view of the weight: not counted

    peak, _ = peak_bytes(run, torch.device("cpu"))
    assert peak == 1000 * 4
