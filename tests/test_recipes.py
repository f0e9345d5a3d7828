"""plan.py's recipes: the shipped YAML, what each section and flag resolves to, and bad input."""

import dataclasses

import pytest
import yaml

from vjepa_agent.config import PlanConfig, Recipe
from vjepa_agent.errors import UserError
from vjepa_agent.recipes import recipe_files, recipes_dir, resolve, save_recipe

R = lambda **kw: resolve(PlanConfig(**kw))  # noqa: E731


def test_every_shipped_recipe_resolves_for_every_mode_and_encoder():
    assert set(recipe_files()) >= {"CartPole-v1", "vjepa_agent/NoisyCartPole-v0", "Pendulum-v1"}
    for env in [*recipe_files(), "MountainCar-v0"]:  # the last one has no file: default.yaml
        for obs, encoders in (("state", [None]), ("pixels", [None, "vit", "jepa", "moments"])):
            for enc in encoders:
                r = R(env=env, obs=obs, pixel_encoder=enc)
                assert isinstance(r, Recipe) and r.collect.env == env and r.collect.obs == obs
                r.world_model.validate()


def test_cartpole_recipes_hold_the_measured_settings():
    moments = R(env="CartPole-v1")
    assert moments.world_model.pixel_encoder == "moments"
    assert (moments.collect.steps, moments.world_model.steps) == (10000, 3000)
    assert moments.collect.exploring_starts and moments.collect.start_spread == "position"
    assert (moments.collect.size, moments.collect.grayscale, moments.rounds) == (64, False, 0)
    assert moments.objective.termination_logit_weight == 1.0 and moments.objective.goal_weight == 0
    p = moments.planner
    assert (p.samples, p.elites, p.iterations, p.horizon) == (128, 8, 1, 10)
    jepa = R(env="CartPole-v1", pixel_encoder="jepa")  # the learned section over the pixels one
    assert (jepa.collect.steps, jepa.world_model.steps, jepa.rounds) == (20000, 1800, 0)
    assert jepa.world_model.random_shift == (0, 4) and jepa.world_model.encoder.tubelet_size == 4
    assert jepa.planner.mirror_actions == [1, 0] and moments.planner.mirror_actions is None
    assert (jepa.collect.size, jepa.collect.grayscale) == ((16, 256), True)
    assert jepa.collect.start_spread == "state" and jepa.world_model.frozen_steps == 3000
    assert jepa.world_model.rollout_steps == 8  # from the pixels section
    state = R(env="CartPole-v1", obs="state")
    assert state.world_model.pixel_encoder == "vit" and state.objective.goal_weight == 1.0
    assert state.objective.goal_state_weights == [1.0, 0.0, 100.0, 0.0]
    noisy = R(env="vjepa_agent/NoisyCartPole-v0", pixel_encoder="jepa", out="r")
    jepa = R(env="CartPole-v1", pixel_encoder="jepa", out="r")
    assert noisy == dataclasses.replace(
        jepa, collect=dataclasses.replace(jepa.collect, env="vjepa_agent/NoisyCartPole-v0")
    )
    assert R(env="Pendulum-v1").planner.iterations == 3  # the dataclass default
    assert R(env="Pendulum-v1", obs="state").world_model.steps == 1500
    assert R(env="Pendulum-v1", pixel_encoder="jepa").world_model.steps == 2000  # default.yaml


def test_flags_then_set_then_recipe_file_override_the_shipped_recipe(tmp_path):
    r = R(env="CartPole-v1", samples=16, horizon=4, train_steps=5, rounds=3, pixel_encoder="jepa")
    assert (r.planner.samples, r.planner.horizon, r.world_model.steps, r.rounds) == (16, 4, 5, 3)
    r = R(env="CartPole-v1", set=["world_model.lr=3e-4", "planner.horizon=20", "round_steps=7"])
    assert (r.world_model.lr, r.planner.horizon, r.round_steps) == (3e-4, 20, 7)
    assert isinstance(r.world_model.lr, float)
    # a shortcut flag wins over --set, --set over --recipe
    (tmp_path / "r.yaml").write_text("planner: {horizon: 6, samples: 32}\nrounds: 1\n")
    r = R(env="CartPole-v1", recipe=tmp_path / "r.yaml", set=["planner.horizon=8"], samples=9)
    assert (r.planner.horizon, r.planner.samples, r.rounds) == (8, 9, 1)
    # an encoder named by --set or a recipe file picks the learned section too
    assert R(env="CartPole-v1", set=["world_model.pixel_encoder=jepa"]).collect.steps == 20000


def test_a_saved_recipe_reproduces_the_run(tmp_path):
    cfg = PlanConfig(env="CartPole-v1", pixel_encoder="jepa", set=["world_model.lr=2e-4"], rounds=1)
    save_recipe(resolve(cfg), tmp_path / "recipe.yaml")
    again = resolve(PlanConfig(env="CartPole-v1", recipe=tmp_path / "recipe.yaml"))
    assert again == resolve(cfg)
    assert "data" not in yaml.safe_load((tmp_path / "recipe.yaml").read_text())["world_model"]


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(set=["world_model.lrr=1"]), "unknown recipe key 'world_model.lrr'"),
        (dict(set=["planner.samples=many"]), "'planner.samples' must be int, got 'many'"),
        (dict(set=["planner.planner=beam"]), "must be one of 'auto', 'cem'"),
        (dict(set=["collect.steps"]), "must look like section.field=value"),
        (dict(set=["world_model.seed=3"]), "is set by the run"),
        (dict(recipe="nowhere.yaml"), "recipe file 'nowhere.yaml' does not exist"),
    ],
)
def test_bad_recipe_values_get_one_line_errors(kw, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
        R(env="CartPole-v1", **kw)
    assert "\n" not in str(e.value)


def test_shipped_recipe_files_are_checked_when_loaded(tmp_path, monkeypatch):
    import shutil

    from vjepa_agent import recipes

    shutil.copytree(recipes_dir(), tmp_path / "recipes")
    bad = tmp_path / "recipes" / "cartpole.yaml"
    bad.write_text(bad.read_text().replace("rounds: 0", "rounds: two"))
    monkeypatch.setattr(recipes, "recipes_dir", lambda: tmp_path / "recipes")
    assert R(env="CartPole-v1").rounds == 0  # the pixels sections are fine
    with pytest.raises(UserError, match=r"cartpole\.yaml \[learned\]: 'rounds' must be int"):
        R(env="CartPole-v1", pixel_encoder="jepa")


def test_a_repeated_set_flag_keeps_every_value():
    from vjepa_agent.config import load_config

    argv = ["--set", "planner.horizon=20", "--env", "CartPole-v1", "--set", "rounds=4", "x=1"]
    cfg = load_config(PlanConfig, argv + ["--set=round_steps=7"])
    assert cfg.set == ["planner.horizon=20", "rounds=4", "x=1", "round_steps=7"]
    assert cfg.env == "CartPole-v1"
    assert load_config(PlanConfig, ["--set", "rounds=4"]).set == ["rounds=4"]
