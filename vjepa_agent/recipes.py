"""`plan.py`'s recipes: one typed `config.Recipe` per env and observation mode, shipped as YAML in
`configs/recipes/` and checked against the dataclasses' types when loaded.

A recipe file names the envs it serves (`envs:`) and holds partial recipes in sections applied in
order: `all` (every observation mode), then `pixels` or `state`, then `learned` for the learned
pixel encoders (jepa, reconstruction). `default.yaml` comes first for every env. A run applies,
after the shipped sections, its `--recipe FILE`, its `--set section.field=value` items and its
shortcut flags (`config.PLAN_SHORTCUTS`), in that order, and saves the result as `recipe.yaml`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from vjepa_agent.config import PLAN_SHORTCUTS, PlanConfig, Recipe, to_dict
from vjepa_agent.errors import UserError, require
from vjepa_agent.presets import presets_dir

LEARNED_ENCODERS = ("jepa", "reconstruction")
SECTIONS = ("all", "pixels", "state", "learned")
# fields a run sets itself (from --env, --obs, --seed, --out, --tracker); a recipe may not
RUN_FIELDS = {
    "collect": ("env", "obs", "seed", "out"),
    "world_model": ("data", "out", "seed", "tracker"),
}


def recipes_dir() -> Path:
    return presets_dir() / "recipes"


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping, or a one-line `UserError`."""
    require(Path(path).is_file(), f"recipe file '{path}' does not exist")
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"recipe file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from e
    require(isinstance(values, dict), f"recipe file '{path}' must hold a mapping of keys to values")
    return values


def recipe_files() -> dict[str, Path]:
    """Env id -> the shipped recipe file that serves it (default.yaml serves the rest)."""
    files = {}
    for path in sorted(recipes_dir().glob("*.yaml")):
        if path.stem != "default":
            for env_id in read_yaml(path).get("envs", []):
                files[env_id] = path
    return files


def shipped_sections(env_id: str, obs: str, learned: bool) -> list[tuple[str, dict[str, Any]]]:
    """The shipped partial recipes for an env, in the order they apply, each with its source."""
    paths = [recipes_dir() / "default.yaml"]
    if env_id in recipe_files():
        paths.append(recipe_files()[env_id])
    names = ["all", obs] + (["learned"] if learned else [])
    layers = []
    for path in paths:
        values = read_yaml(path)
        unknown = set(values) - set(SECTIONS) - {"envs"}
        require(
            not unknown,
            f"recipe file '{path}': unknown sections {sorted(unknown)}; "
            f"valid: envs, {', '.join(SECTIONS)}",
        )
        layers += [(f"{path.name} [{n}]", values[n]) for n in names if values.get(n)]
    return layers


def apply(obj: Any, values: dict[str, Any], source: str, where: str = "") -> Any:
    """A copy of dataclass `obj` with `values` applied, every value checked against its field's
    type (ints become floats where a float is wanted, lists tuples); a one-line `UserError`
    naming `source` for an unknown key or a value of the wrong type."""
    require(isinstance(values, dict), f"{source}: '{where or 'recipe'}' must be a mapping")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    updates = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise UserError(
                f"{source}: unknown recipe key '{where}{key}'; valid keys: {', '.join(names)}"
            )
        require(
            name not in RUN_FIELDS.get(where.rstrip("."), ()),
            f"{source}: '{where}{name}' is set by the run (--env, --obs, --seed, --out, "
            "--tracker), not by a recipe",
        )
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            updates[name] = apply(current, value, source, f"{where}{name}.")
        else:
            updates[name] = coerce(value, hints[name], f"{source}: '{where}{name}'")
    return dataclasses.replace(obj, **updates)


def coerce(value: Any, hint: Any, what: str) -> Any:
    """`value` as type `hint` (a config field's annotation), or a one-line `UserError`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return coerce(value, arg, what)
            except UserError:
                pass
    elif origin is Literal:
        if value in args:
            return value
    elif hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, str):  # PyYAML reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Path:
        if isinstance(value, str | Path):
            return Path(value)
    elif origin in (list, tuple) and isinstance(value, list | tuple):
        if origin is list:
            return [coerce(v, args[0], what) for v in value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], what) for v in value)
        if len(args) == len(value):
            return tuple(coerce(v, a, what) for v, a in zip(value, args, strict=True))
    elif origin is dict:
        if isinstance(value, dict):
            return value
    else:
        return value  # a type this check does not know: taken as it is
    raise UserError(f"{what} must be {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def parse_set(item: str) -> dict[str, Any]:
    """`section.field=value` -> {'section': {'field': value}}, the value read as YAML."""
    key, sep, text = item.partition("=")
    require(
        bool(sep and key),
        f"--set '{item}' must look like section.field=value, e.g. world_model.lr=3e-4",
    )
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"--set '{item}': the value is not valid YAML") from e
    return _nest(key.strip(), value)


def _nest(path: str, value: Any) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    return {head: _nest(rest, value) if rest else value}


def run_folder(cfg: PlanConfig) -> Path:
    """plan.py's run folder: --out, else runs/plan-<env>-<obs>."""
    return Path(cfg.out or f"runs/plan-{cfg.env.replace('/', '-')}-{cfg.obs}")


def resolve(cfg: PlanConfig) -> Recipe:
    """The recipe a plan.py run uses: the env's shipped sections, then --recipe, --set and the
    shortcut flags, with the run's own fields (env, obs, seed, folders, tracker) filled in."""
    extra = read_yaml(cfg.recipe) if cfg.recipe is not None else {}
    sets = [parse_set(item) for item in cfg.set]
    shortcuts = [
        (f"--{flag.replace('_', '-')}", _nest(path, getattr(cfg, flag)))
        for flag, path in PLAN_SHORTCUTS.items()
        if getattr(cfg, flag) is not None
    ]
    later = [(str(cfg.recipe), extra)] + [("--set", s) for s in sets] + shortcuts
    # the encoder picks the sections: the last layer that names one, else the shipped ones
    encoder = None
    for _, layer in later:
        encoder = (layer.get("world_model") or {}).get("pixel_encoder", encoder)
    if encoder is None:
        base = Recipe()
        for source, values in shipped_sections(cfg.env, cfg.obs, learned=False):
            base = apply(base, values, source)
        encoder = base.world_model.pixel_encoder
    recipe = Recipe()
    learned = cfg.obs == "pixels" and encoder in LEARNED_ENCODERS
    for source, values in shipped_sections(cfg.env, cfg.obs, learned) + later:
        if values:
            recipe = apply(recipe, values, source)
    out = run_folder(cfg)
    collect = dataclasses.replace(
        recipe.collect, env=cfg.env, obs=cfg.obs, seed=cfg.seed, out=out / "data"
    )
    world_model = dataclasses.replace(
        recipe.world_model,
        data=out / "data",
        out=out / "model",
        seed=cfg.seed,
        tracker=cfg.tracker,
    )
    return dataclasses.replace(recipe, collect=collect, world_model=world_model)


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write a resolved recipe as YAML, without the fields the run sets, so that `--recipe PATH`
    (with the same --env, --obs and --seed) applies it again."""
    values = to_dict(recipe)
    for section, names in RUN_FIELDS.items():
        for name in names:
            values[section].pop(name)
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))


def is_learned(recipe: Recipe) -> bool:
    """Whether the recipe trains a learned pixel encoder (jepa, reconstruction)."""
    return recipe.collect.obs == "pixels" and recipe.world_model.pixel_encoder in LEARNED_ENCODERS
