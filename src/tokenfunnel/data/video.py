"""Videos as lists of RGB frames: decoding files with PyAV, sampling frames from them, and normalising the other
forms a video arrives in (one image, a list of images, a (T, H, W, C) or (T, C, H, W) array).

A LLaVA-style VLM sees a video as a sequence of images, one placeholder run per frame, so a frame list is all the
model side needs.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# Where Debian's opencv-doc package installs OpenCV's sample data (a standard package path, not a machine's)
OPENCV_SAMPLES = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_VIDEOS = ("vtest.avi", "Megamind.avi", "tree.avi")

# Containers store times rounded (Matroska to the millisecond): a rate or a tick count within 1% of a tick of the
# exact one counts as exact, so that sampling at a video's own rate takes every frame
_TICK_SLACK = 0.01


def read_video(path: str | Path, frames: int | None = None, fps: float | None = None) -> list[Image.Image]:
    """The RGB frames of the video at ``path``: ``frames=T`` samples T distinct frames evenly over the whole
    video (first and last included), ``fps=F`` takes the frame nearest each tick of 1/F seconds from the first
    frame to the last (F at most the video's average rate), and neither takes every frame.

    The file is decoded twice (once to count frames and read their times, once to keep the chosen ones) so that a
    long video never sits in memory whole. With ``fps``, a frame nearest several ticks (where a variable-rate
    video holds one frame long) is taken once.
    """
    if frames is not None and fps is not None:
        raise ValueError("pass frames=T or fps=F to sample the video, not both")
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int)):
        raise ValueError(f"frames must be a whole number of frames to sample, got {frames!r}")
    if frames is not None and frames <= 0:
        raise ValueError(f"frames must be a positive number of frames to sample, got T = {frames}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be a positive frame rate, got {fps}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"video not found: {path} (pass an existing video file)")
    times = _frame_times(path)
    if not times:
        raise ValueError(f"{path} holds no video frames: pass a video with at least one frame")
    if frames is not None:
        if frames > len(times):
            raise ValueError(f"{path} holds only {len(times)} frames: ask for frames <= {len(times)}")
        wanted = uniform_indices(len(times), frames)
    elif fps is not None:
        wanted = _indices_at_rate(path, times, fps)
    else:
        wanted = list(range(len(times)))
    return _decode(path, wanted)


def uniform_indices(count: int, frames: int) -> list[int]:
    """``frames`` distinct indices spread evenly over ``range(count)``, the first and (for ``frames`` > 1) the last
    included: index i is i * (count - 1) / (frames - 1), rounded half up."""
    if not 0 < frames <= count:
        raise ValueError(f"cannot pick {frames} distinct frames out of {count}: ask for 1 to {count}")
    if frames == 1:
        return [0]
    # integer arithmetic: float rounding could make two neighbours equal when the step is exactly 1
    return [(2 * i * (count - 1) + frames - 1) // (2 * (frames - 1)) for i in range(frames)]


def _indices_at_rate(path: Path, times: list[float | None], fps: float) -> list[int]:
    """Index of the frame nearest each tick start + k / fps up to the last frame, each frame taken once."""
    if any(t is None for t in times):
        raise ValueError(f"{path} has frames without timestamps: sample it with frames=T instead of fps")
    # decoders emit frames in display order, but AVI has no presentation times: with B-frames its frames carry
    # decode-order stamps. The stamps are right as a set, so the i-th frame shows at the i-th earliest
    times = sorted(times)
    start, span = times[0], times[-1] - times[0]
    if len(times) > 1 and span > 0:
        native = (len(times) - 1) / span
        if fps > native * (1 + _TICK_SLACK):
            raise ValueError(f"{path} holds {native:.4g} frames per second on average: ask for fps <= {native:.4g}")
    wanted: list[int] = []
    for k in range(math.floor(span * fps + _TICK_SLACK) + 1):
        target = start + k / fps
        after = min(bisect.bisect_left(times, target), len(times) - 1)
        nearest = after - 1 if after > 0 and target - times[after - 1] <= times[after] - target else after
        if not wanted or wanted[-1] != nearest:
            wanted.append(nearest)
    return wanted


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise ValueError(f"cannot read {path} as a video ({error.__class__.__name__}): pass a video file") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} has no video stream: pass a video file")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _frame_times(path: Path) -> list[float | None]:
    """Presentation time in seconds of every decodable frame, in display order."""
    import av

    container, stream = _open(path)
    with container:
        try:
            return [frame.time for frame in container.decode(stream)]
        except av.FFmpegError as error:
            raise ValueError(f"cannot decode {path} ({error.__class__.__name__}): pass a readable video") from None


def _decode(path: Path, wanted: Sequence[int]) -> list[Image.Image]:
    import av

    keep = set(wanted)
    out: list[Image.Image] = []
    container, stream = _open(path)
    with container:
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index in keep:
                    out.append(frame.to_image())
                    if len(out) == len(keep):
                        break
        except av.FFmpegError as error:
            raise ValueError(f"cannot decode {path} ({error.__class__.__name__}): pass a readable video") from None
    if len(out) != len(keep):  # the first pass decoded them all; a second that does not is a broken file
        raise ValueError(f"{path} decoded to fewer frames on a second read: pass a readable video")
    return out


def as_frames(video, frames: int | None = None, fps: float | None = None) -> list[Image.Image]:
    """A video as a list of same-size RGB frames.

    ``video`` is a file path (sampled by ``read_video`` with ``frames`` or ``fps``, one of which is required),
    one PIL image (a 1-frame video), a list or tuple of PIL images, or a torch tensor / numpy array of shape
    (T, H, W, C) or (T, C, H, W) with 1 or 3 channels, uint8 or float in [0, 1].
    """
    if isinstance(video, str | Path):
        if frames is None and fps is None:
            raise ValueError(
                f"pass frames=T or fps=F to sample {video} (or read_video({str(video)!r}) for every frame)"
            )
        return read_video(video, frames=frames, fps=fps)
    if frames is not None or fps is not None:
        raise ValueError("frames= and fps= sample a video file: pass a path, or drop them for frames already decoded")
    if isinstance(video, Image.Image):
        return [video.convert("RGB")]
    if isinstance(video, list | tuple):
        return _check_sizes(_image_list(video))
    array = _as_numpy(video)
    if array is None:
        raise ValueError(
            f"cannot read a video from a {type(video).__name__}: pass a path, a PIL image, a list of PIL images "
            "or a (T, H, W, C) / (T, C, H, W) array"
        )
    return _array_frames(array)


def _image_list(items: Sequence) -> list[Image.Image]:
    if not items:
        raise ValueError("the video has no frames (T = 0): pass at least one frame")
    for index, item in enumerate(items):
        if not isinstance(item, Image.Image):
            raise ValueError(f"frame {index} is a {type(item).__name__}, not a PIL image: pass PIL images as frames")
    return [item.convert("RGB") for item in items]


def _check_sizes(frames: list[Image.Image]) -> list[Image.Image]:
    first = frames[0].size
    for index, frame in enumerate(frames):
        if frame.size != first:
            raise ValueError(
                f"frame {index} is {frame.size[0]}x{frame.size[1]} but frame 0 is {first[0]}x{first[1]}: "
                "resize the frames to one size"
            )
    return frames


def _as_numpy(video) -> np.ndarray | None:
    if isinstance(video, np.ndarray):
        return video
    import torch

    if isinstance(video, torch.Tensor):
        tensor = video.detach().cpu()
        # numpy has no bfloat16; float32 holds every value of the narrower float types exactly
        return (tensor.float() if tensor.is_floating_point() else tensor).numpy()
    return None


def _array_frames(array: np.ndarray) -> list[Image.Image]:
    if array.ndim != 4:
        raise ValueError(
            f"a video array has 4 dims, (T, H, W, C) or (T, C, H, W); got shape {tuple(array.shape)} "
            "(for one image add a leading frame axis or pass a PIL image)"
        )
    if array.shape[0] == 0:
        raise ValueError("the video has no frames (T = 0): pass at least one frame")
    last, second = array.shape[-1] in (1, 3), array.shape[1] in (1, 3)
    if last == second:
        raise ValueError(
            f"cannot tell the channel axis of shape {tuple(array.shape)}: pass (T, H, W, C) or (T, C, H, W) "
            "with C = 1 or 3 channels"
        )
    if second:
        array = array.transpose(0, 2, 3, 1)
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        if array.size and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise ValueError("float video values must lie in [0, 1]: scale them, or pass uint8 frames in [0, 255]")
        pixels = np.round(array * 255).astype(np.uint8)
    else:
        raise ValueError(f"video arrays of {array.dtype} are not supported: pass uint8, or float in [0, 1]")
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return [Image.fromarray(np.ascontiguousarray(frame)) for frame in pixels]


def frames_of(item, index: int = 0) -> list[Image.Image]:
    """Item ``index`` of a processor batch as its frames: ``[item]`` for one PIL image, the list for a video (a
    list or tuple of PIL frames). Only these two forms: a processor should not guess at paths or arrays."""
    if isinstance(item, Image.Image):
        return [item]
    if not isinstance(item, list | tuple):
        raise ValueError(f"item {index} is a {type(item).__name__}: pass a PIL image or a list of PIL frames")
    if not item:
        raise ValueError(f"item {index} is a video with no frames: pass at least one frame")
    for frame in item:
        if not isinstance(frame, Image.Image):
            raise ValueError(f"item {index} holds a {type(frame).__name__}: pass its frames as PIL images")
    return list(item)


def opencv_sample_videos() -> dict[str, Path]:
    """OpenCV's three sample videos, by file stem (``vtest``, ``Megamind``, ``tree``), as Debian's ``opencv-doc``
    package installs them: real footage for trying video input beyond synthetic clips."""
    paths = {Path(name).stem: OPENCV_SAMPLES / name for name in OPENCV_VIDEOS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ValueError(
            f"OpenCV's sample videos are missing ({', '.join(missing)}): install them with `apt-get install opencv-doc`"
        )
    return paths
