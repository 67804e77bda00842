"""The configs shipped with i2dl (`<lab>/<name>.yaml`), found through the installed package, so that
`-c configs/digits/cnn.yaml` (or just `-c cnn`) works from any folder and in a non-editable install. The repository's
top-level `configs/` is a link to this folder."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CONFIG_FLAGS = ("-c", "--config")


def packaged(lab: str, name: str) -> Path | None:
    """The shipped config file for `name` ("cnn", "cnn.yaml", "digits/cnn.yaml", "configs/digits/cnn.yaml"), or
    None."""
    parts = [p for p in Path(name).parts if p not in (".", "configs")]
    if not parts:
        return None
    if len(parts) == 1:
        parts = [lab, parts[0]]
    if len(parts) != 2 or ".." in parts:
        return None
    folder, stem = parts
    stem = stem if stem.endswith((".yaml", ".yml")) else f"{stem}.yaml"
    path = Path(str(resources.files(__name__).joinpath(folder, stem)))
    return path if path.is_file() else None


def find(lab: str, name: str) -> Path:
    """A config path: `name` as a file if it exists, else the shipped config; FileNotFoundError otherwise."""
    if Path(name).is_file():
        return Path(name)
    path = packaged(lab, name)
    if path is None:
        raise FileNotFoundError(f"{name}: no such config file (shipped configs: {', '.join(available(lab))})")
    return path


def available(lab: str) -> list[str]:
    folder = resources.files(__name__).joinpath(lab)
    return (
        sorted(f"configs/{lab}/{p.name}" for p in folder.iterdir() if p.name.endswith(".yaml"))
        if folder.is_dir()
        else []
    )


def resolve_config_args(lab: str, argv: list[str]) -> list[str]:
    """argv with each `-c/--config NAME` that is not a file here replaced by the shipped config of that name."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in CONFIG_FLAGS and i + 1 < len(argv):
            out += [arg, _resolved(lab, argv[i + 1])]
            i += 2
            continue
        if arg.startswith("--config="):
            arg = "--config=" + _resolved(lab, arg.split("=", 1)[1])
        out.append(arg)
        i += 1
    return out


def _resolved(lab: str, value: str) -> str:
    if Path(value).is_file() or value.lstrip().startswith(("{", "[")):  # a file, or inline YAML
        return value
    path = packaged(lab, value)
    return str(path) if path else value
