"""The package as a user installs it: the namespaced envs, the commands, the presets by name, and
the one-line errors for a missing extra."""

import importlib.metadata
import json
import os
import sys
from pathlib import Path

import pytest

from vjepa_agent.errors import UserError

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMMANDS = PYPROJECT["project"]["scripts"]  # name -> "module:function"


# An editable install's import hook (setuptools) maps `vjepa_agent.envs` to envs/ by itself; without
# it the import runs as from a source checkout that was never installed.
WITHOUT_INSTALL = (
    "import sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith('__editable__')]\n"
)


# `run_script("-c", code, env=IMPORTABLE)` from another folder: this checkout importable, as
# pytest's pythonpath has it
IMPORTABLE = {
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
}


# ---------------------------------------------------------------------------- envs


@pytest.mark.parametrize("installed", [True, False], ids=["as-installed", "source-only"])
def test_import_beside_a_folder_with_its_own_envs_package(tmp_path, installed, run_script):
    # a project folder with its own `envs` package, first on sys.path (the working folder)
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "__init__.py").write_text("OWNER = 'the project'\n")
    code = ("" if installed else WITHOUT_INSTALL) + (
        "import sys, gymnasium as gym, vjepa_agent.plan_run, envs\n"
        "assert envs.OWNER == 'the project', envs.__file__\n"
        "print(vjepa_agent.envs.__name__, gym.make(vjepa_agent.envs.POINT_GOAL_ID).spec.id)\n"
    )
    proc = run_script("-c", code, cwd=tmp_path, env=IMPORTABLE, timeout=300)
    assert proc.stdout.split() == ["vjepa_agent.envs", "vjepa_agent/PointGoal-v0"]


def test_import_vjepa_agent_registers_the_envs_without_torch(tmp_path, run_script):
    code = WITHOUT_INSTALL + (
        "import sys, gymnasium as gym, vjepa_agent\n"
        "for env_id in ('vjepa_agent/PointGoal-v0', 'vjepa_agent/NoisyCartPole-v0'):\n"
        "    gym.make(env_id).reset(seed=0)\n"
        "print(sorted(m for m in ('torch', 'envs') if m in sys.modules))\n"
    )
    proc = run_script("-c", code, cwd=tmp_path, env=IMPORTABLE, timeout=300)
    assert proc.stdout.strip() == "[]"  # no torch yet, and no top-level `envs` module


def test_pyproject_lists_every_package():
    # the package list is explicit (envs/ and configs/ install inside vjepa_agent), so a new
    # subpackage must be added to it or the installed package would lack it
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "vjepa_agent").rglob("__init__.py")
    }
    tool = PYPROJECT["tool"]["setuptools"]
    assert found | {"vjepa_agent.envs", "vjepa_agent.configs"} == set(tool["packages"])
    assert tool["package-dir"] == {"vjepa_agent.envs": "envs", "vjepa_agent.configs": "configs"}
    assert not any(p == "envs" or p.startswith("envs.") for p in tool["packages"])


# ---------------------------------------------------------------------------- commands


def test_the_installed_commands_are_the_pyproject_ones():
    try:
        dist = importlib.metadata.distribution("vjepa_agent")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("vjepa_agent is not installed (make install)")
    installed = {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}
    assert installed == COMMANDS, "the installed metadata is older than pyproject: make install"
    bin_dir = Path(sys.executable).parent
    missing = [name for name in COMMANDS if not (bin_dir / name).exists()]
    assert not missing, f"not in {bin_dir}: {missing}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_answers_help_with_config(name, tmp_path, run_script):
    module, function = COMMANDS[name].split(":")
    code = f"import sys; sys.argv = [{name!r}, '--help']; from {module} import {function}; {function}()"
    proc = run_script("-c", code, cwd=tmp_path, env=IMPORTABLE, timeout=300)
    assert f"usage: {name}" in proc.stdout
    assert "--config" in proc.stdout and "cpu-small" in proc.stdout


@pytest.mark.parametrize("module", sorted({v.split(":")[0] for v in COMMANDS.values()}))
def test_every_script_wraps_its_command(module, tmp_path, run_script):
    proc = run_script(f"{module.rsplit('.', 1)[1]}.py", "--help", cwd=tmp_path)
    assert "--config" in proc.stdout


def test_config_by_name_from_any_folder(tmp_path, run_script):
    code = (
        "from vjepa_agent.cli import parse\n"
        "from vjepa_agent.config import PretrainConfig\n"
        "cfg = parse(PretrainConfig, None, ['--config', 'cpu-small', '--batch-size', '3'])\n"
        "print(cfg.encoder.dim, cfg.encoder.depth, cfg.batch_size)\n"
    )
    proc = run_script("-c", code, cwd=tmp_path, env=IMPORTABLE, timeout=300)
    assert proc.stdout.split() == ["192", "12", "3"]  # the preset's ViT-Tiny; the flag wins


def test_config_that_is_neither_file_nor_preset_is_one_line_error(tmp_path, capsys, monkeypatch):
    from vjepa_agent.cli import pretrain_video

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vjepa-pretrain", "--config", "cpu-smal"])
    with pytest.raises(SystemExit) as exit_info:
        pretrain_video.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("error: config 'cpu-smal' is neither a YAML file nor a preset")
    assert "cpu-small" in err and "vitl16" in err


# ---------------------------------------------------------------------------- extras


def hide(monkeypatch, *modules: str) -> None:
    """Make `modules` look uninstalled to this process (an import of them fails)."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_plan_without_matplotlib_is_one_line_error_before_any_work(monkeypatch, capsys):
    import vjepa_agent.plan_run
    from vjepa_agent.cli import plan

    hide(monkeypatch, "matplotlib")
    monkeypatch.setattr(vjepa_agent.plan_run, "run_plan", lambda cfg: pytest.fail("it ran"))
    monkeypatch.setattr(sys, "argv", ["vjepa-plan", "--env", "CartPole-v1"])
    with pytest.raises(SystemExit) as exit_info:
        plan.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: the plan plots its returns (plan.png), but matplotlib is not installed: "
        "pip install 'vjepa_agent[viz]'"
    )


def test_pretrain_without_tensorboard_is_one_line_error(monkeypatch, tmp_path):
    from vjepa_agent.config import PretrainConfig
    from vjepa_agent.train import pretrain

    hide(monkeypatch, "tensorboard")
    monkeypatch.setattr(pretrain, "build_dataset", lambda cfg: pytest.fail("it ran"))
    with pytest.raises(UserError, match=r"TensorBoard.*pip install 'vjepa_agent\[viz\]'$"):
        pretrain.pretrain(PretrainConfig(out=tmp_path / "run"))


@pytest.mark.parametrize("loop", ["pretrain", "world_model"])
def test_the_wandb_tracker_without_wandb_is_one_line_error(monkeypatch, tmp_path, loop):
    from vjepa_agent.config import PretrainConfig, WorldModelConfig
    from vjepa_agent.data.rollouts import RolloutStore
    from vjepa_agent.train import pretrain, world_model

    hide(monkeypatch, "wandb")
    monkeypatch.setattr(pretrain, "build_dataset", lambda cfg: pytest.fail("it ran"))
    monkeypatch.setattr(RolloutStore, "open", lambda path: pytest.fail("it ran"))
    message = r"^[^\n]*Weights & Biases.*pip install 'vjepa_agent\[wandb\]'$"
    with pytest.raises(UserError, match=message):
        if loop == "pretrain":
            pretrain.pretrain(PretrainConfig(out=tmp_path / "run", tracker="wandb"))
        else:
            world_model.train_world_model(WorldModelConfig(out=tmp_path / "run", tracker="wandb"))


@pytest.mark.parametrize("launcher", ["train_world_model", "plan"])
def test_the_wandb_tracker_logs_the_metrics_of_metrics_jsonl(monkeypatch, tmp_path, launcher):
    """A real Weights & Biases run, offline: every logged loss of metrics.jsonl is in its run file;
    vjepa-plan passes its --tracker to the world model it trains."""
    pytest.importorskip("wandb")
    from vjepa_agent import envs
    from vjepa_agent.config import PlanConfig, WorldModelConfig
    from vjepa_agent.plan_run import run_plan
    from vjepa_agent.train.world_model import train_world_model

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    out = tmp_path / "run"
    if launcher == "plan":
        plan = dict(obs="state", collect_steps=200, train_steps=50, episodes=1, horizon=2)
        plan.update(samples=4, elites=1, iterations=1, max_episode_steps=5, video=False)
        run_plan(PlanConfig(out=out, tracker="wandb", **plan))
        out = out / "model"
    else:
        envs.collect_rollouts("CartPole-v1", 200, out=tmp_path / "data", obs="state", seed=0)
        tiny = dict(steps=10, log_every=5, predictor_dim=16, predictor_depth=1, batch_size=8)
        train_world_model(
            WorldModelConfig(data=tmp_path / "data", out=out, tracker="wandb", **tiny)
        )
    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    logged = run_file.read_bytes()
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses and all(json.dumps(v).encode() in logged for v in losses)


def test_compare_without_matplotlib_is_one_line_error(monkeypatch, tmp_path):
    from vjepa_agent import objective_comparison as compare

    hide(monkeypatch, "matplotlib")
    monkeypatch.setattr(compare, "launch_jobs", lambda cfg, plan: pytest.fail("it ran"))
    with pytest.raises(UserError, match=r"compare\.png.*pip install 'vjepa_agent\[viz\]'$"):
        compare.run_compare(compare.CompareConfig(out=tmp_path / "cmp"))


def test_video_files_without_a_decoder_is_one_line_error(monkeypatch, tmp_path):
    from vjepa_agent.data import video

    monkeypatch.setattr(video, "decord", None)
    monkeypatch.setattr(video, "av", None)
    with pytest.raises(UserError, match=r"decord or PyAV.*pip install 'vjepa_agent\[video\]'$"):
        video.VideoClipDataset(tmp_path)
