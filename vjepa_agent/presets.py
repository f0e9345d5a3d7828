"""The YAML presets that ship with the package (the repository's `configs/` folder), found by name.

`--config cpu-small` works from any folder. An installed package holds the presets in
`vjepa_agent/configs/` (pyproject's package-dir maps `configs/` there); a source checkout, and an
editable install of one, in `<root>/configs/`.
"""

from __future__ import annotations

from pathlib import Path

from vjepa_agent.errors import UserError

_PACKAGE = Path(__file__).resolve().parent


def presets_dir() -> Path:
    """The folder holding the presets: inside the installed package, else the checkout's configs/."""
    installed = _PACKAGE / "configs"
    return installed if installed.is_dir() else _PACKAGE.parent / "configs"


def preset_names() -> list[str]:
    """The presets' names (file names without `.yaml`), sorted."""
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def config_path(name_or_path: str | Path) -> Path:
    """The YAML file of `--config`: the path itself when it is a file, else the preset of that name
    (`cpu-small` or `cpu-small.yaml`); a one-line `UserError` naming the presets otherwise."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.parent == Path("."):
        preset = presets_dir() / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
        if preset.is_file():
            return preset
    raise UserError(
        f"config '{name_or_path}' is neither a YAML file nor a preset; "
        f"the presets are {', '.join(preset_names())}"
    )
