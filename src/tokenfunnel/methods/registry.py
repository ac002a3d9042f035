"""Method names -> (config class, plan class), and ``compress``, the one public entry point."""

from __future__ import annotations

from dataclasses import fields

from tokenfunnel.methods.dart import DART, DARTConfig
from tokenfunnel.methods.detail import Detail, DetailConfig
from tokenfunnel.methods.difficulty import Difficulty, DifficultyConfig
from tokenfunnel.methods.downsample import Downsample, DownsampleConfig
from tokenfunnel.methods.fastv import FastV, FastVConfig
from tokenfunnel.methods.learned import Learned, LearnedConfig
from tokenfunnel.methods.lod import LOD, LODConfig
from tokenfunnel.methods.luvc import LUVC, LUVCConfig, LUVCFocusConfig
from tokenfunnel.methods.pdrop import PDrop, PDropConfig
from tokenfunnel.methods.pool import Pool, PoolConfig
from tokenfunnel.methods.pvc import PVC, FrameMergeConfig, PVCConfig, TokenStaticConfig
from tokenfunnel.methods.random_drop import RandomConfig, RandomDrop
from tokenfunnel.methods.tome import ToMe, ToMeConfig
from tokenfunnel.methods.visionzip import VisionZip, VisionZipConfig
from tokenfunnel.runtime.handle import Handle

METHODS = {
    "luvc": (LUVCConfig, LUVC),
    "luvc-focus": (LUVCFocusConfig, LUVC),  # the question's named part first (reads the question: tokenizer)
    "fastv": (FastVConfig, FastV),
    "pdrop": (PDropConfig, PDrop),
    "dart": (DARTConfig, DART),
    "random": (RandomConfig, RandomDrop),
    "visionzip": (VisionZipConfig, VisionZip),
    "tome": (ToMeConfig, ToMe),
    "pool": (PoolConfig, Pool),
    "downsample": (DownsampleConfig, Downsample),
    # budgets that follow the video (no keep): the preset, and its two temporal stages alone
    "pvc": (PVCConfig, PVC),
    "pvc-frames": (FrameMergeConfig, PVC),
    "pvc-tokens": (TokenStaticConfig, PVC),
    # budgets that follow the question (lod: keep optional, scales its tiers) and the input's difficulty (no keep)
    "lod": (LODConfig, LOD),
    "difficulty": (DifficultyConfig, Difficulty),
    "learned": (LearnedConfig, Learned),  # trained on the bundled VLM: importance MLP + learned merge (keep: at input)
    "detail": (DetailConfig, Detail),  # a global view plus the details the question needs (keep: with them)
}


def takes_keep(method: str) -> bool:
    """Whether ``method`` is asked for a keep (else its budget follows the input and keep is only measured)."""
    return any(f.name == "keep" for f in fields(METHODS[method][0]))


def reads_question(method: str) -> bool:
    """Whether ``method`` reads the question as text, so its config needs the processor's tokenizer."""
    return method in METHODS and any(f.name == "tokenizer" for f in fields(METHODS[method][0]))


def processor_options(method: str, processor) -> dict:
    """What a caller holding the processor adds to ``compress(model, method, ...)`` so that every method runs from
    its name alone: the tokenizer for methods that read the question, and the image normalisation (``image_mean``,
    ``image_std`` of ``processor.image_processor``) for methods that read the pixels, when the processor has them."""
    out = {}
    tokenizer = getattr(processor, "tokenizer", None)
    if reads_question(method) and tokenizer is not None:
        out["tokenizer"] = tokenizer
    images = getattr(processor, "image_processor", None)
    mean, std = getattr(images, "image_mean", None), getattr(images, "image_std", None)
    takes = {f.name for f in fields(METHODS[method][0])}
    if {"image_mean", "image_std"} <= takes and mean is not None and std is not None:
        out["image_mean"], out["image_std"] = tuple(map(float, mean)), tuple(map(float, std))
    return out


def _by_config(config) -> str:
    for name, (cls, _) in METHODS.items():
        if type(config) is cls:
            return name
    raise TypeError(
        f"unknown config type {type(config).__name__}; pass a method name ({', '.join(METHODS)}) or its config"
    )


def make_config(method: str, keep: float | None = None, **options):
    """The config ``compress(model, method, keep=keep, **options)`` runs with (its defaults filled in); unknown
    methods, options and a keep for a method that takes none are refused."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    config_cls, _ = METHODS[method]
    allowed = {f.name for f in fields(config_cls)}
    if keep is not None and "keep" not in allowed:
        raise TypeError(
            f"{method} takes no keep: its budget follows the input (see its options); handle.report() gives the "
            "realised keep"
        )
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{method} has no option {', '.join(unknown)}; its options: {', '.join(sorted(allowed))}")
    return config_cls(**options) if keep is None else config_cls(keep=keep, **options)


def compress(model, method="luvc", keep: float | None = None, **options) -> Handle:
    """Compress ``model``'s visual tokens in place (this instance only): ``compress(model, "luvc", keep=0.25)``.

    ``method`` is a name or a config instance (e.g. ``LUVCConfig(keep=0.25)``). Returns a handle whose
    ``remove()`` (or the end of a ``with`` block) restores the model exactly.
    """
    if isinstance(method, str):
        config = make_config(method, keep, **options)
    else:
        if keep is not None or options:
            raise TypeError("pass options either in the config object or as keywords, not both")
        config = method
        method = _by_config(config)
    return Handle(model, METHODS[method][1](config), config)
