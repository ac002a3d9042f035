"""Learned compressor: between the projector and the language model, a small trained module (``ops.compressor``)
keeps ``keep`` of each sample's visual tokens (an importance MLP ranks them) and folds every dropped token into the
kept token it is most alike, with learned weights. The reduced set enters every decoder layer.

The committed weights were distilled on the bundled VLM (``python -m tokenfunnel.models.train_learned``, or
``make train-learned``): the compressed model is taught the uncompressed model's answer distribution on easy-VQA
training images. They fit any model whose projector gives tokens of the same width; pass ``weights`` for others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from tokenfunnel.methods.common import SelectStage, can_decode, check_keep, focus_label, question_text, tokens_for
from tokenfunnel.ops.compressor import Compressor
from tokenfunnel.ops.detail import named_parts, part_cells
from tokenfunnel.runtime.state import Selection, Visuals

WEIGHTS_FILE = "learned_compressor.safetensors"
MAKE_THEM = "make them with `make train-learned` (python -m tokenfunnel.models.train_learned)"


def default_weights() -> Path:
    return Path(str(resources.files("tokenfunnel.models") / "weights" / WEIGHTS_FILE))


@dataclass(frozen=True)
class LearnedConfig:
    """Options of learned.

    keep: the fraction of each sample's visual tokens that enter the language model (at every layer).
    weights: a compressor file written by ``tokenfunnel.models.train_learned``; None: the committed one, trained on
        the bundled VLM.

    focus: where the question names a part of the picture (a corner, "top-left"; a half, "left half"; see
        ``ops.detail.named_parts``), that part's tokens are kept before any other, the most important first, and a
        dropped token folds only into a kept token on its own side of the part (left out when none was kept there).
        Needs the tokenizer (or focus=False). Not applied to a tiling family's tiles (the model is not told where a
        tile lies); ``report()["stage"]["focus"]`` gives the part used per sample.
    tokenizer: the processor's tokenizer (``processor.tokenizer``), to read the question; only used with focus.
    """

    keep: float = 0.25
    weights: str | Path | None = None
    focus: bool = True
    tokenizer: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if self.focus and not can_decode(self.tokenizer):
            raise ValueError(
                "learned's focus reads the question as text: pass the processor's tokenizer, "
                "compress(model, 'learned', tokenizer=processor.tokenizer), or focus=False"
            )


def load_compressor(path: Path) -> tuple[Compressor, dict]:
    """The compressor stored at ``path`` and its metadata (training config, seed); one-line errors when it is missing
    or unreadable."""
    if not path.is_file():
        raise FileNotFoundError(f"no learned compressor weights at {path}; {MAKE_THEM}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(path)
        compressor = Compressor(int(meta["dim"]), int(meta["hidden"]))
        compressor.load_state_dict({k: v.float() for k, v in state.items()})
    except (OSError, SafetensorError, KeyError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"cannot read the learned compressor {path} ({reason}); {MAKE_THEM}") from None
    return compressor.eval().requires_grad_(False), meta


def save_compressor(compressor: Compressor, path: Path, meta: dict) -> None:
    """Write ``compressor`` with its width, hidden size and ``meta`` (JSON-encoded values) as safetensors metadata."""
    from safetensors.torch import save_file

    info = {key: value if isinstance(value, str) else json.dumps(value) for key, value in meta.items()}
    info.update(dim=str(compressor.dim), hidden=str(compressor.hidden))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in compressor.state_dict().items()}, str(path), metadata=info)


class Learned(SelectStage):
    name = "learned"

    def __init__(self, config: LearnedConfig) -> None:
        self.config = config
        self.compressor: Compressor | None = None
        self.meta: dict = {}

    def check(self, adapter) -> None:
        super().check(adapter)
        path = Path(self.config.weights) if self.config.weights is not None else default_weights()
        compressor, self.meta = load_compressor(path)
        width = adapter.text_model.config.hidden_size
        if compressor.dim != width:
            raise ValueError(
                f"the learned compressor {path} was trained for {compressor.dim}-wide projected tokens, but this "
                f"model's language model takes {width}; pass weights= trained for this model"
            )
        h, w = adapter.token_grid()
        tokens_for(self.config.keep, h, w, self.name)  # raises if keep leaves no token
        self.compressor = compressor

    def select(self, v: Visuals) -> Selection:
        x = v.features
        images, n = x.shape[0], x.shape[1]
        k = tokens_for(self.config.keep, images * n, 1, self.name)
        if self.compressor is None:
            raise RuntimeError("learned was not installed through tokenfunnel.compress()")
        self.compressor.to(device=x.device, dtype=x.dtype)
        c, info = self.config, {"folded": images * n - k}
        parts = []
        if c.focus:
            info["question_text"] = question_text(c.tokenizer, v.question_ids)
            parts = named_parts(info["question_text"])
            info["focus"] = focus_label(parts, v.thumbnail)
        first = part_cells(parts, *v.grid, x.device).repeat(images)[None] if parts and not v.thumbnail else None
        with torch.no_grad():
            merged, cells, sizes = self.compressor(x[None], k, first)
        return Selection(merged[0], cells[0], sizes[0], [k] * v.layers, info)
