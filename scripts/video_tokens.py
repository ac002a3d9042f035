"""Token reduction and prefill time of PVC on real videos: the OpenCV sample videos (Debian package opencv-doc).

    python scripts/video_tokens.py --frames 16 --repeats 2 --out benchmarks/video_tokens.json

For each video, ``--frames`` frames sampled uniformly go to the bundled VLM as one prompt (one <image> run per
frame) with a generic question; no labels, so no accuracy. For the uncompressed model and each temporal preset:
frames -> merged frames -> tokens entering the LLM, the realised keep, and the median vision / LLM-prefill /
time-to-first-token over ``--repeats`` timed prefills (after a warm-up; settings interleaved per video).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch

from tokenfunnel.bench.models import load_model
from tokenfunnel.bench.settings import NONE, Setting
from tokenfunnel.bench.timing import time_prompt
from tokenfunnel.data.video import opencv_sample_videos, read_video

QUESTION = "What is happening in the video?"
METHODS = ("pvc", "pvc-frames", "pvc-tokens")


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/video_tokens.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench = load_model("bundled", 0, torch.device("cpu"))
    settings = [NONE] + [Setting(m, None) for m in METHODS]
    rows = []
    for path in opencv_sample_videos().values():
        frames = read_video(path, frames=args.frames)
        batch = bench.processor([frames], [QUESTION])
        timed = time_prompt(bench, batch, settings, args.repeats)
        for setting in settings:
            with setting.applied(bench.model) as handle:
                bench.model(**batch, use_cache=False, logits_to_keep=1)
                report = handle.report() if handle is not None else None
            times = {k: statistics.median(v) for k, v in timed[setting.id].items()}
            base = {k: statistics.median(v) for k, v in timed[NONE.id].items()}
            temporal = (report or {}).get("temporal", {})
            original = int((batch["input_ids"] == bench.image_token_id).sum())
            rows.append(
                {
                    "video": path.name,
                    "size": list(frames[0].size),
                    "method": setting.method,
                    "frames": args.frames,
                    "merged_frames": temporal.get("merged_frames", [args.frames])[0],
                    # each frame's mean token cosine with the running merged frame (pvc-tokens: with the frame before)
                    "frame_similarity": temporal.get("frame_similarity", [None])[0],
                    "visual_tokens": report["visual_tokens"] if report else original,
                    "original_visual_tokens": original,
                    "realised_keep": report["keep"] if report else 1.0,
                    **{k: round(v, 4) for k, v in times.items()},
                    "speedup_llm_prefill": round(base["llm_prefill_s"] / times["llm_prefill_s"], 3),
                    "speedup_ttft": round(base["ttft_s"] / times["ttft_s"], 3),
                }
            )
            print(json.dumps(rows[-1]))
    result = {
        "command": f"python scripts/video_tokens.py --frames {args.frames} --repeats {args.repeats}",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "question": QUESTION,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
