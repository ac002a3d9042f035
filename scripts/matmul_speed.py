"""How fast this CPU multiplies LM-shaped matrices in fp32 and bf16 (decides the dtype for training/eval).

python scripts/matmul_speed.py
"""

import time

import torch


def main() -> None:
    a, w = torch.randn(2048, 576), torch.randn(1536, 576)
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), w.to(dtype)
        x @ y.T  # warm-up
        started = time.perf_counter()
        for _ in range(10):
            x @ y.T
        seconds = (time.perf_counter() - started) / 10
        print(f"{dtype}: {2 * 2048 * 576 * 1536 / seconds / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
