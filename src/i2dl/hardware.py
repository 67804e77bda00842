"""What the machine at hand can do, and the defaults that follow from it: `precision: auto` picks bf16 autocast
only where the hardware computes bf16 natively (on an AVX2-only CPU bf16 autocast ran 5-8x *slower* than float32),
and `channels_last: auto` only where it paid in measurement. Benchmarks print `describe()` beside their figures."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache

# CPU flags (as /proc/cpuinfo spells them) that mean native bf16 arithmetic in oneDNN's kernels.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni")


@dataclass(frozen=True)
class CPUInfo:
    model: str
    flags: frozenset[str]
    cores: int

    @property
    def native_bf16(self) -> bool:
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    def describe(self) -> str:
        shown = " ".join(f for f in SHOWN_FLAGS if f in self.flags) or "no AVX2/AVX-512"
        return f"{self.model}, {self.cores} cores available, flags: {shown}"


def parse_cpuinfo(text: str, cores: int | None = None) -> CPUInfo:
    """A CPUInfo from the text of /proc/cpuinfo (the first processor's model name and flags)."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("", platform.processor() or platform.machine()):
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return CPUInfo(model or "unknown CPU", flags, cores if cores is not None else available_cores())


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def cpu_info() -> CPUInfo:
    try:
        with open("/proc/cpuinfo") as fh:
            return parse_cpuinfo(fh.read())
    except OSError:
        return CPUInfo(platform.processor() or platform.machine() or "unknown CPU", frozenset(), available_cores())


def gpu_bf16() -> bool | None:
    """None without a CUDA GPU, else whether it computes bf16 natively."""
    import torch

    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None


def resolve_precision(
    precision: str | int | None,
    accelerator: str = "auto",
    cpu: CPUInfo | None = None,
    gpu: bool | None | str = "detect",
) -> str:
    """Lightning precision for `precision="auto"`: "bf16-mixed" on a GPU with bf16 or on a CPU with native bf16
    (AVX512-BF16/AMX), else "32-true". Any other value is returned as Lightning spells it. `gpu` is None (no GPU),
    True/False (a GPU with/without bf16), or "detect"."""
    if precision not in ("auto", None):
        return str(precision)
    if gpu == "detect":
        gpu = gpu_bf16() if accelerator in ("auto", "gpu", "cuda") else None
    if gpu is not None:
        return "bf16-mixed" if gpu else "32-true"
    cpu = cpu or cpu_info()
    return "bf16-mixed" if cpu.native_bf16 else "32-true"


def resolve_channels_last(
    channels_last: bool | str, precision: str, cpu: CPUInfo | None = None, cuda: bool = False
) -> bool:
    """`channels_last: auto` -> True where it was measured to pay: on a GPU, and on a CPU with AVX-512 (1.35x
    float32 and 1.62x with bf16 for segmentation there); on an AVX2-only CPU it gave 1.08x in float32 and made
    bf16 slower, so only float32 keeps it there."""
    if isinstance(channels_last, bool):
        return channels_last
    if channels_last != "auto":
        raise ValueError(f"channels_last must be true, false or auto, got {channels_last!r}")
    if cuda:
        return True
    cpu = cpu or cpu_info()
    return cpu.avx512 or not precision.startswith("bf16")


def describe() -> str:
    """One line for benchmark output: CPU model, cores, relevant flags, torch version and threads."""
    import torch

    gpu = f", GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu_info().describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}"
