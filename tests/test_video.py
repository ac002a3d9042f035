"""Reading and normalising videos: a small clip written with PyAV whose frames say their own index."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tokenfunnel.data import video
from tokenfunnel.data.video import as_frames, frames_of, opencv_sample_videos, read_video, uniform_indices

RATE = 12


def _grey(index: int) -> int:
    return 10 + 20 * index


def _index(frame: Image.Image) -> int:
    """The frame index a test video's grey level encodes (lossy coding moves it by a few levels at most)."""
    return round((np.asarray(frame).mean() - 10) / 20)


def write_video(path, stamps, size: int = 32, name: str = "mpeg4") -> None:
    """Frame i is a flat grey of level 10 + 20 i, shown at stamps[i] / RATE seconds."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(name, rate=RATE)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, RATE)
        if not stamps:
            container.start_encoding()  # the header alone: a video stream that holds no frame
        for index, stamp in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), _grey(index), np.uint8), format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, RATE)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """12 frames, 32x32, at 12 frames per second."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, list(range(12)))
    return path


def test_every_frame_by_default(clip):
    frames = read_video(clip)
    assert [_index(f) for f in frames] == list(range(12))
    assert all(f.size == (32, 32) and f.mode == "RGB" for f in frames)


@pytest.mark.parametrize(("count", "expected"), [(4, [0, 4, 7, 11]), (1, [0]), (2, [0, 11]), (12, list(range(12)))])
def test_frames_samples_evenly_over_the_whole_video(clip, count, expected):
    assert [_index(f) for f in read_video(clip, frames=count)] == expected


def test_uniform_indices_are_distinct_and_span_the_video():
    for count in range(1, 40):
        for frames in range(1, count + 1):
            picked = uniform_indices(count, frames)
            assert len(set(picked)) == frames and picked == sorted(picked)
            assert picked[0] == 0 and (frames == 1 or picked[-1] == count - 1)


@pytest.mark.parametrize(
    ("fps", "expected"), [(4, [0, 3, 6, 9]), (12, list(range(12))), (1, [0]), (5, [0, 2, 5, 7, 10])]
)
def test_fps_takes_the_frame_nearest_each_tick(clip, fps, expected):
    assert [_index(f) for f in read_video(clip, fps=fps)] == expected


def test_fps_on_a_variable_rate_video_takes_each_frame_once(tmp_path):
    path = tmp_path / "gaps.mkv"  # Matroska rounds times to the millisecond, which sampling must tolerate
    write_video(path, [0, 3, 6, 18, 21])  # 0, 0.25, 0.5, then a 1 s hold, 1.5, 1.75
    # ticks at 0, 0.5, 1.0 and 1.5 s: the hold's middle is nearest frame 2 again, taken once
    assert [_index(f) for f in read_video(path, fps=2)] == [0, 2, 3]
    with pytest.raises(ValueError, match="frames per second on average"):
        read_video(path, fps=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": 0}, "T = 0"),
        ({"frames": -2}, "positive number of frames"),
        ({"frames": 2.5}, "whole number of frames"),
        ({"fps": 0}, "fps must be a positive"),
        ({"fps": -1.5}, "fps must be a positive"),
        ({"frames": 4, "fps": 2}, "not both"),
        ({"frames": 13}, "holds only 12 frames"),
        ({"fps": 13}, r"ask for fps <= 12"),
    ],
)
def test_bad_sampling_requests_fail_clearly(clip, kwargs, message):
    with pytest.raises(ValueError, match=message):
        read_video(clip, **kwargs)


def test_unreadable_files_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="video not found"):
        read_video(tmp_path / "missing.mp4", frames=2)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match="cannot read .* as a video"):
        read_video(garbage)
    empty = tmp_path / "empty.avi"
    write_video(empty, [])
    with pytest.raises(ValueError, match="holds no video frames"):
        read_video(empty)


def test_as_frames_of_a_path_needs_a_sampling_choice(clip):
    with pytest.raises(ValueError, match="pass frames=T or fps=F"):
        as_frames(clip)
    assert [_index(f) for f in as_frames(str(clip), frames=3)] == [0, 6, 11]
    assert [_index(f) for f in as_frames(clip, fps=6)] == [0, 2, 4, 6, 8, 10]


def test_as_frames_of_images():
    grey = Image.new("L", (20, 10), 128)
    (one,) = as_frames(grey)
    assert one.mode == "RGB" and one.size == (20, 10)
    frames = [Image.new("RGB", (20, 10), (i, 0, 0)) for i in range(3)]
    assert [np.asarray(f)[0, 0, 0] for f in as_frames(tuple(frames))] == [0, 1, 2]
    with pytest.raises(ValueError, match="frames= and fps= sample a video file"):
        as_frames(frames, frames=2)


def test_as_frames_of_arrays_in_either_layout():
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 6, 7, 3), dtype=np.uint8)
    expected = [Image.fromarray(p) for p in pixels]
    channels_first = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    for given in (pixels, channels_first, pixels.astype(np.float32) / 255, channels_first.float() / 255):
        frames = as_frames(given)
        assert len(frames) == 5 and frames[0].size == (7, 6)
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(frames, expected, strict=True))
    grey = as_frames(np.zeros((2, 1, 4, 4), np.uint8))
    assert grey[0].mode == "RGB" and grey[0].size == (4, 4)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([], r"T = 0"),
        (np.zeros((0, 8, 8, 3), np.uint8), r"T = 0"),
        ([Image.new("RGB", (8, 8)), Image.new("RGB", (8, 6))], "frame 1 is 8x6 but frame 0 is 8x8: resize"),
        ([Image.new("RGB", (8, 8)), "frame.png"], "frame 1 is a str, not a PIL image"),
        (np.zeros((8, 8, 3), np.uint8), "has 4 dims"),
        (torch.zeros(2, 8, 8), "has 4 dims"),
        (np.zeros((2, 3, 8, 3), np.uint8), "cannot tell the channel axis"),
        (np.zeros((2, 8, 8, 5), np.uint8), "cannot tell the channel axis"),
        (np.full((2, 8, 8, 3), 2.0), r"in \[0, 1\]"),
        (np.zeros((2, 8, 8, 3), np.int64), "int64 are not supported"),
        (42, "cannot read a video from a int"),
    ],
)
def test_bad_videos_fail_clearly(given, message):
    with pytest.raises(ValueError, match=message):
        as_frames(given)


def test_frames_of_takes_an_image_or_a_frame_list():
    image = Image.new("RGB", (4, 4))
    assert frames_of(image) == [image]
    assert frames_of((image, image)) == [image, image]
    with pytest.raises(ValueError, match="item 3 is a video with no frames"):
        frames_of([], 3)
    with pytest.raises(ValueError, match="item 0 holds a ndarray"):
        frames_of([np.zeros((4, 4, 3))])
    with pytest.raises(ValueError, match="item 1 is a str"):
        frames_of("clip.mp4", 1)


def test_opencv_samples_missing_name_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "OPENCV_SAMPLES", tmp_path)
    with pytest.raises(ValueError, match="apt-get install opencv-doc"):
        opencv_sample_videos()
    for name in video.OPENCV_VIDEOS:
        (tmp_path / name).write_bytes(b"")
    assert opencv_sample_videos() == {
        "vtest": tmp_path / "vtest.avi",
        "Megamind": tmp_path / "Megamind.avi",
        "tree": tmp_path / "tree.avi",
    }


@pytest.mark.skipif(
    not video.OPENCV_SAMPLES.is_dir(), reason="OpenCV's sample videos (Debian opencv-doc) not installed"
)
def test_opencv_sample_videos_decode():
    frames = read_video(opencv_sample_videos()["tree"], frames=4)
    assert len(frames) == 4 and frames[0].size == (320, 240)
