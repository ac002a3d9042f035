"""Errors the bundled model raises; each message names the command that fixes it."""


class BundledModelError(RuntimeError):
    """The bundled VLM cannot be built or loaded (missing package, corrupt cache)."""
