"""vjepa_agent: V-JEPA world models and latent-space planning.

Importing the package registers its gymnasium envs (`vjepa_agent/PointGoal-v0`,
`vjepa_agent/NoisyCartPole-v0`) and nothing heavier: torch loads with the first module that needs
it (`vjepa_agent.WorldModel` included), so the commands answer `--help` without it.
"""

from pathlib import Path

__version__ = "0.1.0"

# The repository's top-level envs/ folder is the subpackage `vjepa_agent.envs`. An installed copy
# (editable or not) maps it there (pyproject's package-dir). A source checkout run without
# installation (pytest's pythonpath ["."], `python scripts/plan.py`) has it beside this folder
# instead, so the checkout's root joins this package's search path: `vjepa_agent.envs` then
# resolves to <root>/envs by the ordinary import machinery, and a top-level `envs` package in the
# working folder (or PyPI's) is never involved.
_here = Path(__file__).resolve().parent
if not (_here / "envs").is_dir() and (_here.parent / "envs" / "__init__.py").is_file():
    __path__.append(str(_here.parent))

from vjepa_agent import envs  # noqa: E402  (registers the gymnasium ids)


def __getattr__(name: str):
    # `from vjepa_agent import WorldModel` works as before, importing torch only when asked for
    if name == "WorldModel":
        from vjepa_agent.world_model import WorldModel

        return WorldModel
    raise AttributeError(f"module 'vjepa_agent' has no attribute '{name}'")


__all__ = ["WorldModel", "__version__", "envs"]
