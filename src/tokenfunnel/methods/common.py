"""What every method config shares: ``keep`` and its one meaning, checked the same way everywhere."""

from __future__ import annotations

from tokenfunnel.ops.budget import drop_once, fit_grid, grid_target
from tokenfunnel.ops.merge import grid_schedule


def check_keep(keep: float) -> None:
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}; e.g. keep=0.25 keeps a quarter of the visual FLOPs")


def decoder_layers(adapter) -> int:
    return adapter.text_model.config.num_hidden_layers


class DecoderOnly:
    """Base of the methods that leave the vision encoder alone and drop visual tokens inside the language model."""

    proportional = False

    def encoder_steps(self, h: int, w: int, layers: int) -> dict[int, tuple[str, int]]:
        return {}


class SingleDrop(DecoderOnly):
    """Methods that drop once, at decoder layer ``config.layer`` (FastV, DART): every visual token enters the layers
    before it, and the count after it is solved so the mean over all layers is ``config.keep``."""

    name = "?"

    def __init__(self, config) -> None:
        self.config = config

    def check(self, adapter) -> None:
        layers = decoder_layers(adapter)
        if self.config.layer >= layers:
            raise ValueError(f"{self.name} layer {self.config.layer} is outside this {layers}-layer language model")
        try:
            drop_once(1000, layers, self.config.keep * 1000, self.config.layer)
        except ValueError as err:
            raise ValueError(f"{self.name} cannot reach keep {self.config.keep}: {err}") from None

    def llm_counts(self, entering: int, original: int, layers: int) -> list[int]:
        return drop_once(entering, layers, self.config.keep * original, self.config.layer)


class EncoderSide:
    """Base of the methods that shrink the visual tokens inside or right after the vision encoder: the language
    model then sees the same reduced set at every layer, so ``keep`` is the fraction of tokens that leave it."""

    proportional = False
    name = "?"

    def llm_counts(self, entering: int, original: int, layers: int) -> list[int]:
        return [entering] * layers

    def score(self, inputs) -> None:  # never asked: the counts never fall inside the language model
        raise RuntimeError(f"{self.name} does not prune inside the language model")

    def check(self, adapter) -> None:
        if adapter.family != "llava":
            raise ValueError(
                f"{self.name} runs on LLaVA-family models only (it needs one language-model token per patch, "
                f"which {adapter.family} does not have); use luvc, fastv, pdrop, dart or random there"
            )
        h, w = adapter.nominal_grid()
        resize = getattr(self, "input_grid", None)
        seen = resize(h, w) if resize is not None else (h, w)
        self.encoder_steps(*seen, adapter.usable_layers)  # raises if the keep cannot be honoured


class SelectStage(EncoderSide):
    """Base of the methods with a stage between the projector and the language model (``select``): they read each
    sample's projected tokens (after any pixel shuffle) and question and keep a set of them, so they run on every
    family whose adapter has that stage (``select_stage``), tiling ones included."""

    def encoder_steps(self, h: int, w: int, layers: int) -> dict[int, tuple[str, int]]:
        return {}

    def check(self, adapter) -> None:
        if not getattr(adapter, "select_stage", False):
            raise ValueError(
                f"{self.name} runs on LLaVA, Idefics3/SmolVLM and InternVL models (it picks tokens between the "
                f"projector and the language model, a stage the {adapter.family} adapter does not have); use luvc, "
                "fastv, pdrop, dart or random there"
            )


def can_decode(tokenizer) -> bool:
    """Whether ``tokenizer`` can turn the question's ids into text (what methods that read the question need)."""
    return tokenizer is not None and hasattr(tokenizer, "decode")


def question_text(tokenizer, ids) -> str:
    """The question a select stage sees (its token ids after the last image), as text."""
    return tokenizer.decode(ids.tolist(), skip_special_tokens=True).strip()


def focus_label(parts: list[str], tiles: bool) -> str:
    """What ``report()["stage"]["focus"]`` says: the named parts used, "none", or that a tiling family's tiles (whose
    place in the picture the model is not told) cannot take them."""
    return "not applied to tiles" if parts and tiles else ", ".join(parts) or "none"


def tokens_for(keep: float, h: int, w: int, name: str) -> int:
    n = round(keep * h * w)
    if n < 1:
        raise ValueError(f"{name} cannot keep {keep} of a {h}x{w} grid: that is no token at all; ask for more")
    return n


def grid_for(keep: float, h: int, w: int, name: str) -> tuple[int, int]:
    """The grid pooling or downsampling an h x w grid to ``keep`` of its tokens gives (see ``fit_grid``)."""
    if keep == 1.0:
        return h, w
    try:
        return fit_grid(h, w, keep * h * w)
    except ValueError as err:
        raise ValueError(f"{name} cannot reach keep {keep}: {err}") from None


def oim_steps(h: int, w: int, layers: int, fraction: float, encoder_start: float) -> dict[int, tuple[str, int]]:
    """OIM's merge steps taking an h x w grid to ``fraction`` of its cells, one step per encoder layer from
    ``encoder_start`` (a fraction of the ``layers`` feeding the LLM) on; {} when nothing is to merge."""
    th, tw = grid_target(h, w, fraction)
    if (th, tw) == (h, w):
        return {}
    first = int(encoder_start * layers)
    n = layers - first
    try:
        schedule = grid_schedule(h, w, th, tw, n)
    except ValueError as err:
        raise ValueError(
            f"OIM cannot take the {h}x{w} grid to {th}x{tw} in the {n} encoder layers after encoder_start: {err}"
        ) from None
    return {first + i: step for i, step in enumerate(schedule) if step[1] > 0}
