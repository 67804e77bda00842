"""`i2dl <lab> <subcommand> ...`: one entry point; each lab module exposes `main(argv)`."""

from __future__ import annotations

import importlib
import sys
from typing import Callable

from i2dl.errors import I2DLError

# lab name -> (module with a `main(argv)` function, one-line summary)
LABS: dict[str, tuple[str, str]] = {
    "digits": ("i2dl.digits.cli", "MNIST / Fashion-MNIST classification (MIT 6.S191 Lab 2)"),
    "autoencoder": ("i2dl.autoencoder.cli", "autoencoder pretraining, encoder transfer, few-label MNIST (I2DL)"),
    "keypoints": ("i2dl.keypoints.cli", "facial keypoint regression on 96x96 faces (I2DL)"),
    "segmentation": ("i2dl.segmentation.cli", "semantic segmentation on MSRC-v2 and CamVid (I2DL)"),
    "rl": ("i2dl.rl.cli", "policy gradients on CartPole and Atari Pong (MIT 6.S191 Lab 3)"),
}
# commands beside the labs
TOOLS: dict[str, tuple[str, str]] = {
    "runs": ("i2dl.runs", "list run folders with their status and headline result"),
    "app": ("i2dl.app.cli", "the labs in the browser (Gradio web app on 127.0.0.1)"),
}

USAGE = (
    "usage: i2dl <lab> <subcommand> [options]\n\nlabs:\n"
    + "\n".join(f"  {name:<14}{summary}" for name, (_, summary) in LABS.items())
    + "\n\nother commands:\n"
    + "\n".join(f"  {name:<14}{summary}" for name, (_, summary) in TOOLS.items())
)


def dispatch(
    argv: list[str],
    usage: str,
    commands: dict[str, Callable[[list[str]], None]],
    default: Callable[[list[str]], None] | None = None,
) -> None:
    """A lab's `main`: `-h` prints `usage`, `commands[argv[0]]` runs with the rest, anything else goes to
    `default` (the lab's LightningCLI) or is an unknown-command error with exit status 2."""
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage)
        sys.exit(0 if argv else 2)
    if argv[0] in commands:
        return commands[argv[0]](argv[1:])
    if default is None:
        print(
            f"{usage.splitlines()[0]}\nerror: unknown command {argv[0]!r}; choose from {', '.join(commands)}",
            file=sys.stderr,
        )
        sys.exit(2)
    return default(argv)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        sys.exit(0 if argv else 2)
    lab, rest = argv[0], argv[1:]
    entry = LABS.get(lab) or TOOLS.get(lab)
    if entry is None:
        print(
            f"i2dl: error: unknown lab {lab!r}; choose from {', '.join(LABS)} (or {', '.join(TOOLS)})", file=sys.stderr
        )
        sys.exit(2)
    try:
        importlib.import_module(entry[0]).main(rest)
    except I2DLError as err:
        print(f"i2dl: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
