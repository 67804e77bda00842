"""Training-step time of the (b) segmentation network on this CPU: memory layout and precision against the plain
float32 NCHW reference, in the same process (the figures quoted for `channels_last` in the segmentation module).

    OMP_NUM_THREADS=1 python benchmarks/segmentation_speed.py [--steps 6] [--batch 8] [--size 224]

One AdamW step (forward, cross-entropy, backward, update) of MobileNetV2 + our U-Net decoder on random data; the
median of `--steps` steps per setting, and its ratio to the reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from i2dl.segmentation.module import SegmentationModule


def step_seconds(channels_last: bool, bf16: bool, steps: int, batch: int, size: int) -> float:
    torch.manual_seed(0)
    module = SegmentationModule(
        approach="backbone_decoder", decoder_channels=(128, 64, 32, 16), channels_last=channels_last
    ).train()
    optimizer = torch.optim.AdamW(module.parameters(), 1e-3)
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, module.info.num_classes, (batch, size, size))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.loss(module(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    from i2dl.hardware import describe

    print(f"machine: {describe()}; load average {os.getloadavg()[0]:.1f}")
    print(f"batch {args.batch} at {args.size}x{args.size}")
    reference = None
    for channels_last, bf16 in ((False, False), (True, False), (False, True), (True, True)):
        seconds = step_seconds(channels_last, bf16, args.steps, args.batch, args.size)
        reference = reference or seconds
        print(
            f"{'channels-last' if channels_last else 'NCHW':13s} {'bf16 autocast' if bf16 else 'float32':13s} "
            f"{seconds * 1000:6.0f} ms/step  {reference / seconds:.2f}x the float32 NCHW reference",
            flush=True,
        )


if __name__ == "__main__":
    main()
