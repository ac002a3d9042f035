"""easy-VQA evaluation and training sets: single images, 2x2 mosaics whose question names one tile, and short
clips (``data.clips``) of one picture held over most frames.

Evaluation sets come from the public test split only; training uses the train split. Every set is drawn
deterministically from a seed and balanced over the three question kinds (yes/no, shape, colour): the
natural mix is ~72% yes/no, which would let one kind dominate the score.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from PIL import Image

SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
KINDS = ("yes/no", "shape", "color")
TILES = ("top-left", "top-right", "bottom-left", "bottom-right")
TILE_SIZE = 64  # easy-VQA images are 64x64
DATASETS = ("easyvqa", "easyvqa-grid", "easyvqa-mixed", "easyvqa-clips")


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    image_id: int

    @property
    def kind(self) -> str:
        if self.answer in ("yes", "no"):
            return "yes/no"
        return "shape" if self.answer in SHAPES else "color"


@dataclass
class Sample:
    """One evaluation item: the image the model sees, the question asked and the expected answer.

    A clip also has ``frames``, the video the model sees instead; ``image`` is then the picture the question is
    about, for display. ``model_input`` gives whichever the model should be fed.
    """

    image: Image.Image
    question: str
    answer: str
    kind: str
    image_ids: tuple[int, ...]
    tile: str | None = None
    meta: dict = field(default_factory=dict)
    frames: tuple[Image.Image, ...] | None = None


def model_input(sample: Sample) -> Image.Image | tuple[Image.Image, ...]:
    """What the processor takes for ``sample``: its frames for a clip, else its image."""
    return sample.frames if sample.frames is not None else sample.image


def _data_dir() -> Path:
    try:
        return Path(str(resources.files("easy_vqa") / "data"))
    except ModuleNotFoundError:
        raise RuntimeError(
            "the easy-VQA data is missing: install it with `pip install easy-vqa` (or `make setup`)"
        ) from None


@cache
def answers() -> tuple[str, ...]:
    """The closed set of 13 easy-VQA answers, in the package's order."""
    return tuple(line.strip() for line in (_data_dir() / "answers.txt").read_text().splitlines() if line.strip())


@cache
def questions(split: str) -> tuple[Question, ...]:
    if split not in ("train", "test"):
        raise ValueError(f"unknown easy-VQA split {split!r}: use 'train' or 'test'")
    rows = json.loads((_data_dir() / split / "questions.json").read_text())
    return tuple(Question(text, answer, int(image_id)) for text, answer, image_id in rows)


def image_path(split: str, image_id: int) -> Path:
    return _data_dir() / split / "images" / f"{image_id}.png"


def load_image(split: str, image_id: int) -> Image.Image:
    with Image.open(image_path(split, image_id)) as image:
        return image.convert("RGB")


@cache
def _questions_by_image(split: str) -> dict[int, dict[str, list[Question]]]:
    table: dict[int, dict[str, list[Question]]] = {}
    for q in questions(split):
        table.setdefault(q.image_id, {k: [] for k in KINDS})[q.kind].append(q)
    return table


@cache
def looks_of(split: str) -> dict[int, tuple[str, str]]:
    """(shape, colour) of every image that has both a shape and a colour question (their answers say it)."""
    out = {}
    for image_id, by_kind in _questions_by_image(split).items():
        if by_kind["shape"] and by_kind["color"]:
            out[image_id] = (by_kind["shape"][0].answer, by_kind["color"][0].answer)
    return out


def mosaic(tiles: list[Image.Image]) -> Image.Image:
    """A 2x2 mosaic in reading order (top-left, top-right, bottom-left, bottom-right)."""
    size = tiles[0].size
    canvas = Image.new("RGB", (2 * size[0], 2 * size[1]))
    for index, tile in enumerate(tiles):
        canvas.paste(tile, ((index % 2) * size[0], (index // 2) * size[1]))
    return canvas


def tile_question(tile: str, text: str) -> str:
    return f"In the {tile} picture, {text}"


def single_set(
    samples: int, seed: int = 0, split: str = "test", image_ids: Collection[int] | None = None
) -> list[Sample]:
    """`samples` questions, each on its own image, kinds drawn in turn so that they are balanced.

    `image_ids` restricts the images (e.g. a dev split of training images that training never saw).
    """
    _check_samples(samples)
    rng = random.Random(seed)
    allowed = set(image_ids) if image_ids is not None else None
    eligible = [q for q in questions(split) if allowed is None or q.image_id in allowed]
    by_kind = {k: [q for q in eligible if q.kind == k] for k in KINDS}
    for pool in by_kind.values():
        rng.shuffle(pool)
    out = []
    for index in range(samples):
        q = by_kind[KINDS[index % 3]][index // 3]
        out.append(Sample(load_image(split, q.image_id), q.text, q.answer, q.kind, (q.image_id,)))
    return out


def grid_set(
    samples: int, seed: int = 0, split: str = "test", image_ids: Collection[int] | None = None
) -> list[Sample]:
    """`samples` 2x2 mosaics of four different images; the question names one tile and its answer."""
    _check_samples(samples)
    rng = random.Random(seed)
    table = _questions_by_image(split)
    image_ids = sorted(table if image_ids is None else set(image_ids) & set(table))
    out = []
    for index in range(samples):
        kind = KINDS[index % 3]
        ids = rng.sample(image_ids, 4)
        position = rng.randrange(4)
        while not table[ids[position]][kind]:  # every image has colour/shape questions; guard anyway
            ids[position] = rng.choice(image_ids)
        q = rng.choice(table[ids[position]][kind])
        image = mosaic([load_image(split, i) for i in ids])
        tile = TILES[position]
        out.append(Sample(image, tile_question(tile, q.text), q.answer, kind, tuple(ids), tile))
    return out


def load_set(name: str, samples: int, seed: int = 0) -> list[Sample]:
    """An evaluation set by name: one of ``DATASETS`` (test split), or one of them with ``-dev`` (easy-VQA training
    images the bundled VLM's training never showed, for choosing settings without touching the test split)."""
    base = name.removesuffix("-dev")
    if base not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}, or one of them with -dev")
    split, ids = ("train", dev_ids()) if name.endswith("-dev") else ("test", None)
    if base == "easyvqa-mixed":
        from tokenfunnel.data.mixed import mixed_set as draw  # these build on this module
    elif base == "easyvqa-clips":
        from tokenfunnel.data.clips import clip_set as draw
    else:
        draw = grid_set if base == "easyvqa-grid" else single_set
    return draw(samples, seed, split=split, image_ids=ids)


@cache
def dev_ids() -> tuple[int, ...]:
    from tokenfunnel.models.train import dev_image_ids  # the split follows the training recipe

    return tuple(dev_image_ids())


def _check_samples(samples: int) -> None:
    if samples <= 0:
        raise ValueError(f"--samples must be a positive number of questions, got {samples}")
