"""``easyvqa-mixed``: 2x2 mosaics where half the questions need one tile and half need the whole mosaic.

A fixed token budget must guess where the answer is; a budget that follows the question can look at the named tile
when there is one and spread out when there is not. Questions alternate:

- ``tile`` (even indices): as in ``easyvqa-grid``, the question names a tile and its answer comes from that tile
  (kinds drawn in turn over yes/no, shape, colour);
- ``whole`` (odd indices): "Is there a {shape} in any of the pictures?" or "Is there a {colour} shape in any of the
  pictures?", answers alternating yes and no. A "yes" holds the asked shape or colour in exactly one tile, at a
  random place, so the evidence is small and nothing in the question says where; a "no" holds it in none.

Tiles come from images whose shape and colour are known (``easyvqa.looks_of``); a mosaic's four images differ.
"""

from __future__ import annotations

import random
from collections.abc import Collection

from tokenfunnel.data.easyvqa import (
    COLORS,
    KINDS,
    SHAPES,
    TILES,
    Sample,
    _check_samples,
    _questions_by_image,
    load_image,
    looks_of,
    mosaic,
    tile_question,
)

SCOPES = ("tile", "whole")
ATTRIBUTES = ("shape", "color")


def whole_question(attribute: str, value: str) -> str:
    if attribute == "shape":
        return f"Is there a {value} in any of the pictures?"
    return f"Is there a {value} shape in any of the pictures?"


def mixed_set(
    samples: int, seed: int = 0, split: str = "test", image_ids: Collection[int] | None = None
) -> list[Sample]:
    """``samples`` mosaics, tile and whole-mosaic questions in turn, drawn deterministically from ``seed``.

    ``meta`` records the scope ("tile" or "whole") and, for a whole-mosaic question, the attribute asked and the
    tile holding it (None for "no").
    """
    _check_samples(samples)
    rng = random.Random(seed)
    looks = looks_of(split)
    ids = sorted(looks if image_ids is None else set(image_ids) & set(looks))
    if len(ids) < 8:
        raise ValueError(f"a mixed set needs at least 8 {split} images of known shape and colour, got {len(ids)}")
    table = _questions_by_image(split)
    out = []
    for index in range(samples):
        if index % 2 == 0:
            out.append(_tile_sample(rng, ids, table, KINDS[(index // 2) % len(KINDS)], split))
        else:
            whole = index // 2
            attribute, yes = ATTRIBUTES[whole % 2], (whole // 2) % 2 == 0
            out.append(_whole_sample(rng, ids, looks, attribute, yes, split))
    return out


def _tile_sample(rng: random.Random, ids: list[int], table: dict, kind: str, split: str) -> Sample:
    chosen = rng.sample(ids, 4)
    position = rng.randrange(4)
    while not table[chosen[position]][kind]:
        chosen[position] = rng.choice([i for i in ids if i not in chosen])
    q = rng.choice(table[chosen[position]][kind])
    image = mosaic([load_image(split, i) for i in chosen])
    tile = TILES[position]
    meta = {"scope": "tile"}
    return Sample(image, tile_question(tile, q.text), q.answer, kind, tuple(chosen), tile, meta=meta)


def _whole_sample(rng: random.Random, ids: list[int], looks: dict, attribute: str, yes: bool, split: str) -> Sample:
    slot = ATTRIBUTES.index(attribute)
    value = rng.choice(SHAPES if attribute == "shape" else COLORS)
    having = [i for i in ids if looks[i][slot] == value]
    lacking = [i for i in ids if looks[i][slot] != value]
    if len(lacking) < 4 or (yes and not having):
        raise ValueError(f"too few {split} images with and without a {value} {attribute}: pass more image ids")
    chosen = rng.sample(lacking, 3 if yes else 4)
    holder = None
    if yes:
        holder = rng.randrange(4)
        chosen.insert(holder, rng.choice(having))
    image = mosaic([load_image(split, i) for i in chosen])
    meta = {"scope": "whole", "attribute": attribute, "value": value, "tile": None if holder is None else TILES[holder]}
    return Sample(image, whole_question(attribute, value), "yes" if yes else "no", "yes/no", tuple(chosen), meta=meta)
