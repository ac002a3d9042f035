"""The one error a benchmark raises for bad input: the CLI prints its message as one line and exits 2."""


class BenchError(ValueError):
    """Bad input to a benchmark (unknown model/dataset/method, too many samples, a foreign output folder)."""
