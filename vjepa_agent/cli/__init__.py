"""The command-line entry points: the `vjepa-*` commands (pyproject's `[project.scripts]`), whose
`main`s `scripts/*.py` call too.

Each command parses its config before it imports torch, so `--help` and a bad flag answer at once.
"""

from __future__ import annotations

import sys
from typing import Any

from vjepa_agent.config import load_config
from vjepa_agent.presets import config_path, preset_names


def config_help() -> str:
    """The `--config` paragraph of every command's help (tyro lists only the dataclass fields)."""
    return (
        "--config NAME|FILE.yaml supplies defaults that flags override; NAME is a preset "
        f"that ships with the package: {', '.join(preset_names())}."
    )


def parse(cls: type, description: str | None, argv: list[str] | None = None) -> Any:
    """`load_config(cls)`, with `--config` naming a preset as well as a file."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = str(config_path(argv[i + 1]))
        elif arg.startswith("--config="):
            argv[i] = f"--config={config_path(arg.removeprefix('--config='))}"
    return load_config(
        cls, argv=argv, description=f"{(description or '').rstrip()}\n\n{config_help()}"
    )
