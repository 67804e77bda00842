"""`i2dl <lab> <subcommand> ...`: one entry point; each lab module exposes `main(argv)`."""

from __future__ import annotations

import importlib
import sys

from i2dl.errors import I2DLError

# lab name -> (module with a `main(argv)` function, one-line summary)
LABS: dict[str, tuple[str, str]] = {
    "digits": ("i2dl.digits.cli", "MNIST / Fashion-MNIST classification (MIT 6.S191 Lab 2)"),
    "autoencoder": ("i2dl.autoencoder.cli", "autoencoder pretraining, encoder transfer, few-label MNIST (I2DL)"),
    "keypoints": ("i2dl.keypoints.cli", "facial keypoint regression on 96x96 faces (I2DL)"),
    "segmentation": ("i2dl.segmentation.cli", "semantic segmentation on MSRC-v2 and CamVid (I2DL)"),
    "rl": ("i2dl.rl.cli", "policy gradients on CartPole and Atari Pong (MIT 6.S191 Lab 3)"),
}

USAGE = "usage: i2dl <lab> <subcommand> [options]\n\nlabs:\n" + "\n".join(
    f"  {name:<14}{summary}" for name, (_, summary) in LABS.items()
)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        sys.exit(0 if argv else 2)
    lab, rest = argv[0], argv[1:]
    if lab not in LABS:
        print(f"i2dl: error: unknown lab {lab!r}; choose from {', '.join(LABS)}", file=sys.stderr)
        sys.exit(2)
    try:
        importlib.import_module(LABS[lab][0]).main(rest)
    except I2DLError as err:
        print(f"i2dl: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
