"""What every method config shares: ``keep`` and its one meaning, checked the same way everywhere."""

from __future__ import annotations


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
        vc = adapter.vision_tower.config
        side = vc.image_size // vc.patch_size
        self.encoder_steps(side, side, adapter.usable_layers)  # raises if the keep cannot be honoured


def tokens_for(keep: float, h: int, w: int, name: str) -> int:
    n = round(keep * h * w)
    if n < 1:
        raise ValueError(f"{name} cannot keep {keep} of a {h}x{w} grid: that is no token at all; ask for more")
    return n
