"""``easyvqa-clips``: short synthetic videos made of easy-VQA pictures, for VLMs that take a video as frames.

A clip holds one main picture over most of its frames, each frame shifted by a pixel or two and lightly noised
(so no two frames are equal, as in real footage), and a different picture over 2-3 consecutive frames. Clips
alternate between two variants:

- ``middle``: the other picture is inserted mid-clip and the question is about the main picture: the model must
  not be misled by a brief cut;
- ``last``: the other picture fills the last frames and the question asks about it ("In the last picture, ..."):
  the model must keep a brief event that most frames do not show.

Both pictures of a clip differ in shape and in colour, so a shape or colour question about one is never answered
by looking at the other. Question kinds are drawn in turn (yes/no, shape, colour), as in ``single_set``.
"""

from __future__ import annotations

import random
from collections.abc import Collection

import numpy as np
from PIL import Image

from tokenfunnel.data.easyvqa import KINDS, Sample, _check_samples, _questions_by_image, load_image, looks_of

VARIANTS = ("middle", "last")
MIN_FRAMES = 8  # room for 2-3 inserted frames with the main picture still on most frames, around them in `middle`
INSERTED = (2, 3)  # how many consecutive frames the other picture holds
SHIFT = 2  # most pixels a frame moves along each axis
NOISE = 3.0  # standard deviation of the per-pixel noise, in 0-255 grey levels


def last_question(text: str) -> str:
    return f"In the last picture, {text}"


def clip_set(
    samples: int,
    seed: int = 0,
    split: str = "test",
    image_ids: Collection[int] | None = None,
    frames: int = 16,
) -> list[Sample]:
    """``samples`` clips of ``frames`` frames each, one question per clip, drawn deterministically from ``seed``.

    ``image_ids`` restricts the pictures (e.g. a dev split of training images that training never saw). Each
    sample's ``image`` is the picture asked about; ``meta`` records the variant, the inserted frames' indices and
    the main, inserted and asked picture ids.
    """
    _check_samples(samples)
    if isinstance(frames, bool) or not isinstance(frames, int):
        raise ValueError(f"frames must be a whole number of frames, got {frames!r}")
    if frames < MIN_FRAMES:
        raise ValueError(
            f"frames must be at least {MIN_FRAMES} (the main picture holds most frames around a 2-3 frame insert), "
            f"got {frames}"
        )
    rng = random.Random(seed)
    looks = looks_of(split)
    ids = sorted(looks if image_ids is None else set(image_ids) & set(looks))
    table = _questions_by_image(split)
    askable = {kind: [i for i in ids if table[i][kind]] for kind in KINDS}
    out = []
    for index in range(samples):
        kind, variant = KINDS[index % len(KINDS)], VARIANTS[index % len(VARIANTS)]
        if not askable[kind]:
            raise ValueError(f"no {split} image in the given image_ids has a {kind} question: pass more image ids")
        asked_id = rng.choice(askable[kind])
        others = [i for i in ids if all(a != b for a, b in zip(looks[i], looks[asked_id], strict=True))]
        if not others:
            raise ValueError(
                f"no {split} image in the given image_ids differs from image {asked_id} in shape and colour: "
                "pass more image ids"
            )
        other_id = rng.choice(others)
        question = rng.choice(table[asked_id][kind])
        count = rng.choice(INSERTED)
        if variant == "middle":
            main_id, inserted_id, text = asked_id, other_id, question.text
            start = rng.randint(2, frames - count - 2)  # at least two main frames on either side
        else:
            main_id, inserted_id, text = other_id, asked_id, last_question(question.text)
            start = frames - count
        inserted = tuple(range(start, start + count))
        main, other = load_image(split, main_id), load_image(split, inserted_id)
        noise = np.random.default_rng(rng.getrandbits(64))
        clip = tuple(_jittered(other if t in inserted else main, noise) for t in range(frames))
        meta = {
            "variant": variant,
            "inserted_frames": inserted,
            "main_id": main_id,
            "inserted_id": inserted_id,
            "asked_id": asked_id,
        }
        image = load_image(split, asked_id)
        out.append(Sample(image, text, question.answer, kind, (main_id, inserted_id), meta=meta, frames=clip))
    return out


def _jittered(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``image`` moved by up to SHIFT pixels along each axis (the uncovered border repeats the edge pixels, as a
    camera's crop would show more of a plain background) with Gaussian noise added."""
    pixels = np.asarray(image, dtype=np.float32)
    dy, dx = (int(d) for d in rng.integers(-SHIFT, SHIFT + 1, size=2))
    padded = np.pad(pixels, ((SHIFT, SHIFT), (SHIFT, SHIFT), (0, 0)), mode="edge")
    h, w = pixels.shape[:2]
    moved = padded[SHIFT - dy : SHIFT - dy + h, SHIFT - dx : SHIFT - dx + w]
    noisy = moved + rng.normal(0.0, NOISE, size=moved.shape)
    return Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
