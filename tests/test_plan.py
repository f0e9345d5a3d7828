"""The MPC agent and scripts/plan.py: real CartPole, tiny budgets, and the one-line errors."""

import json

import numpy as np
import pytest
import torch

from vjepa_agent import envs, planning
from vjepa_agent.agent import LatentObjective, MPCAgent
from vjepa_agent.config import PlanConfig, PlannerConfig, WorldModelConfig
from vjepa_agent.errors import UserError
from vjepa_agent.world_model import WorldModel

STATE_SPEC = {
    "env_id": "CartPole-v1",
    "obs": "state",
    "observation_shape": [4],
    "action_space": {"type": "Discrete", "shape": [], "n": 2, "start": 0},
}


def test_agent_batched_equals_single_and_is_deterministic():
    torch.manual_seed(0)
    wm = WorldModel(WorldModelConfig(predictor_dim=32, predictor_depth=1), STATE_SPEC).eval()
    env = envs.make_env("CartPole-v1", obs="state")
    objective = LatentObjective(goal=torch.zeros(4), termination_penalty=1.0)
    cfg = PlannerConfig(horizon=5, samples=16, elites=4, iterations=2)
    agent = MPCAgent(wm, env.action_space, objective, cfg, seed=3)
    obs = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32) * 0.05
    agent.reset(3)
    batched = [agent.act(obs) for _ in range(4)]
    for e in range(3):  # env e alone, with env e's generator, gives the same actions
        single = MPCAgent(wm, env.action_space, objective, cfg, seed=3)
        single.reset(3)
        single.generators = single.generators[e : e + 1]
        single.warm = {k: v[e : e + 1] for k, v in single.warm.items()}
        single.num_envs = 1
        actions = [single.act(obs[e : e + 1]) for _ in range(4)]
        assert [int(a[0]) for a in actions] == [int(b[e]) for b in batched]
    again = MPCAgent(wm, env.action_space, objective, cfg, seed=3)
    again.reset(3)
    assert all((again.act(obs) == b).all() for b in batched)
    stats = agent.stats()
    assert (
        stats["decisions"] == 4
        and stats["ms_per_action"] > 0
        and stats["planner_overhead_ratio"] >= 0
    )


def test_agent_forgets_only_the_envs_whose_episode_ended():
    torch.manual_seed(0)
    wm = WorldModel(WorldModelConfig(predictor_dim=32, predictor_depth=1), STATE_SPEC).eval()
    env = envs.make_env("CartPole-v1", obs="state")
    cfg = PlannerConfig(horizon=5, samples=16, elites=4, iterations=2)
    agent = MPCAgent(wm, env.action_space, LatentObjective(goal=torch.zeros(4)), cfg, seed=3)
    obs = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32) * 0.05
    agent(obs)  # a collection policy: resizes to 3 envs, acts
    before = agent.warm["probs"].clone()
    uniform = torch.full_like(before[0], 0.5)
    assert not torch.equal(before[1], uniform) and agent.has_last.all()
    agent.episodes_ended(np.array([False, True, False]))
    assert torch.equal(agent.warm["probs"][1], uniform)  # env 1 starts over
    # the others keep their warm start
    assert torch.equal(agent.warm["probs"][[0, 2]], before[[0, 2]])
    assert agent.has_last.tolist() == [True, False, True] and agent.plan is None


def test_collection_tells_a_stateful_policy_which_episodes_ended():
    class CountResets:
        def __init__(self):
            self.ended = 0

        def __call__(self, obs):
            return np.zeros(len(obs), np.int64)  # always push left: episodes end fast

        def episodes_ended(self, done):
            self.ended += int(done.sum())

    policy = CountResets()
    td = envs.collect_rollouts(
        "CartPole-v1", 200, obs="state", num_envs=2, policy=policy, progress=False
    )
    assert policy.ended == int(td["next", "done"].sum()) > 0


@pytest.mark.slow
def test_plan_smoke_writes_summary_video_and_plot(tmp_path, run_script):
    out = tmp_path / "run"
    args = [
        "--env",
        "CartPole-v1",
        "--obs",
        "state",
        "--out",
        str(out),
        "--episodes",
        "2",
        "--collect-steps",
        "600",
        "--train-steps",
        "30",
        "--max-episode-steps",
        "40",
        "--horizon",
        "4",
        "--samples",
        "8",
        "--elites",
        "2",
        "--iterations",
        "1",
    ]
    proc = run_script("plan.py", *args)
    assert proc.stdout.strip().splitlines()[-1] == str(out / "summary.json")
    s = json.loads((out / "summary.json").read_text())
    for key in (
        "mean_return",
        "min_return",
        "returns",
        "episodes",
        "env_steps_trained",
        "train_seconds",
        "ms_per_action",
        "planner",
    ):
        assert key in s, key
    assert s["episodes"] == 2 and len(s["returns"]) == 2 and s["env_steps_trained"] == 600
    assert all(1 <= r <= 40 for r in s["returns"])
    assert (out / "episode.mp4").stat().st_size > 1000 and (out / "plan.png").stat().st_size > 1000
    import decord

    assert len(decord.VideoReader(str(out / "episode.mp4"))) == s["episode_lengths"][0]
    # a second call reuses the cached model
    proc = run_script("plan.py", *args)
    assert "reusing the world model" in proc.stdout
    assert json.loads((out / "summary.json").read_text())["model_reused"]
    # a model trained on another observation mode is refused before any work
    proc = run_script(
        "plan.py",
        *("--env", "CartPole-v1", "--obs", "pixels", "--model", out / "model"),
        *("--out", tmp_path / "x"),
        check=False,
    )
    assert proc.returncode == 2 and "was trained on CartPole-v1 (state)" in proc.stderr


def test_the_plot_marks_the_random_baseline_on_whole_episode_ticks(tmp_path):
    from vjepa_agent.config import PlanConfig
    from vjepa_agent.plan_run import write_plot

    cfg = PlanConfig(env="CartPole-v1", obs="state")
    fig = write_plot([30.0, 55.0, 41.0], [0.1, 0.2], tmp_path / "plan.png", cfg, 21.5)
    returns = fig.axes[0]
    (baseline,) = [ln for ln in returns.get_lines() if "random" in ln.get_label()]
    assert set(baseline.get_ydata()) == {21.5}
    assert "random" in " ".join(t.get_text() for t in returns.get_legend().get_texts())
    ticks = [t for t in returns.get_xticks() if 0.5 <= t <= 3.5]  # inside the three bars
    assert ticks == [1, 2, 3]
    assert (tmp_path / "plan.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "NoSuchEnv-v9"], "unknown environment 'NoSuchEnv-v9'"),
        (["--env", "CartPole-v1", "--planner", "cem"], "planner 'cem' needs a continuous"),
        (
            ["--env", "Pendulum-v1", "--obs", "state", "--planner", "categorical_cem"],
            "categorical_cem",
        ),
        (["--env", "CartPole-v1", "--goal"], "--goal needs an env with a goal image"),
        (["--env", "CartPole-v1", "--model", "/no/such/model"], "holds no world model"),
        (["--env", "Pendulum-v1", "--exploring-starts", "True"], "no start ranges for Pendulum-v1"),
        (
            ["--env", "CartPole-v1", "--obs", "state", "--pixel-encoder", "jepa"],
            "--obs state has none",
        ),
        (["--env", "CartPole-v1", "--frozen-steps", "10"], "--frozen-steps trains a learned"),
        (["--env", "CartPole-v1", "--rounds", "1"], "--rounds collects on-policy data"),
        (
            [
                "--env",
                "CartPole-v1",
                "--pixel-encoder",
                "jepa",
                "--frozen-steps",
                "0",
                "--rounds",
                "1",
            ],
            "give --frozen-steps > 0, or --rounds 0",
        ),
        (
            ["--env", "CartPole-v1", "--pixel-encoder", "jepa", "--frozen-steps", "-1"],
            "frozen_steps must be >= 0",
        ),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    from vjepa_agent.cli import parse
    from vjepa_agent.errors import UserError
    from vjepa_agent.plan_run import check_inputs

    cfg = parse(PlanConfig, None, [*args, "--out", str(tmp_path / "run")])
    with pytest.raises(UserError) as e:
        check_inputs(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # nothing written before the checks


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "NoSuchEnv-v9"], "unknown environment 'NoSuchEnv-v9'"),
        (["--set", "world_model.lrr=1"], "unknown recipe key 'world_model.lrr'"),
    ],
)
def test_the_command_answers_bad_input_with_exit_code_2_and_one_line(
    tmp_path, args, message, run_script
):
    proc = run_script("plan.py", *args, "--out", tmp_path / "run", timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_plan_refuses_a_model_of_frames_rendered_larger(tmp_path):
    """--model: frames rendered at a larger scale (an option this version dropped) are a one-line
    error; folders without a scale render as before, with the default crop."""
    from vjepa_agent.plan_run import check_inputs

    for scale in (2, None):
        spec = {"env_id": "CartPole-v1", "obs": "pixels"}
        if scale is not None:
            spec["render_scale"] = scale
        folder = tmp_path / f"model{scale}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"env": spec}))
        if scale is not None:
            with pytest.raises(UserError, match="rendered at scale 2"):
                check_inputs(PlanConfig(env="CartPole-v1", model=folder))
            continue
        env = check_inputs(PlanConfig(env="CartPole-v1", model=folder))
        assert env.crop == envs.DEFAULT_CROPS["CartPole-v1"] == (150, 330, 0, 600)
        obs, _ = env.reset(seed=0)
        assert (obs < 100).any()  # the cart is in the picture


def test_plan_stacks_and_sizes_frames_as_the_model_did(tmp_path):
    """--model: frame stack, side, grayscale and crop come from the model, not the presets (a
    2-frame model fed the preset's 4-frame stacks would fail deep in the encoder)."""
    from vjepa_agent.config import PlanConfig
    from vjepa_agent.plan_run import check_inputs

    spec = {
        "env_id": "CartPole-v1",
        "obs": "pixels",
        "frame_stack": 2,
        "size": 32,
        "grayscale": True,
        "crop": [140, 340, 0, 600],
    }
    (tmp_path / "config.json").write_text(json.dumps({"env": spec}))
    env = check_inputs(PlanConfig(env="CartPole-v1", model=tmp_path))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1, 2, 32, 32) and obs.dtype == np.uint8
    assert env.crop == (140, 340, 0, 600)
    with pytest.raises(UserError, match="stacks of 2 frames"):
        check_inputs(PlanConfig(env="CartPole-v1", model=tmp_path, frame_stack=4))
    # without --model the preset decides; a flag overrides it
    assert check_inputs(PlanConfig(env="CartPole-v1")).reset(seed=0)[0].shape[1] == 4
    assert check_inputs(PlanConfig(env="CartPole-v1", frame_stack=3)).reset(seed=0)[0].shape[1] == 3


@pytest.mark.slow
def test_plan_pixels_default_learns_on_object_moments_from_spread_starts(tmp_path, run_script):
    """The CartPole pixel preset end to end at a tiny budget: random-policy episodes that start
    anywhere in +-1.5 m, an object-moment world model; a cached model of another encoder is not
    reused."""
    from vjepa_agent.data.rollouts import RolloutStore

    out = tmp_path / "run"
    args = ["--env", "CartPole-v1", "--out", str(out), "--collect-steps", "300"]
    args += "--train-steps 20 --episodes 1 --max-episode-steps 10 --horizon 2 --samples 4".split()
    args += "--elites 1 --iterations 1 --no-video".split()
    proc = run_script("plan.py", *args)
    store = RolloutStore.open(out / "data")
    first = store.data["observation"][store.data["step"] == 0]
    assert first[:, 0].abs().max() > 0.3  # spread starts (the env's own stay within 0.05 m)
    wm = WorldModel.from_pretrained(out / "model")
    assert wm.cfg.pixel_encoder == "moments" and wm.latent_dim == 3 * 4 * 6 + 2
    s = json.loads((out / "summary.json").read_text())
    assert len(s["returns"]) == 1 and 1 <= s["returns"][0] <= 10 and s["env_steps_trained"] == 300
    proc = run_script("plan.py", *args, "--pixel-encoder", "vit")
    assert "reusing the world model" not in proc.stdout
    assert "reusing the 300 steps collected" in proc.stdout  # the same collection
    assert WorldModel.from_pretrained(out / "model").cfg.pixel_encoder == "vit"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["jepa", "reconstruction"])
def test_plan_noisy_cartpole_with_a_learned_encoder(tmp_path, kind, run_script):
    """plan.py on NoisyCartPole with a learned pixel encoder at a tiny budget: 16 x 256 grey
    frames, the encoder kind in both summaries; a --model of this kind refuses another kind's
    flag in one line before any work."""
    out = tmp_path / "run"
    args = ["--env", envs.NOISY_CARTPOLE_ID, "--out", str(out), "--collect-steps", "200"]
    args += ["--pixel-encoder", kind, "--train-steps", "3", "--frozen-steps", "2"]
    args += ["--episodes", "1", "--rounds", "2", "--round-steps", "64"]
    args += (
        "--max-episode-steps 5 --horizon 2 --samples 4 --elites 1 --iterations 1 --no-video".split()
    )
    proc = run_script("plan.py", *args)
    s = json.loads((out / "summary.json").read_text())
    assert s["pixel_encoder"] == kind and s["world_model"]["pixel_encoder"] == kind
    assert "readout_theta_rmse_near" in s["world_model"] or "readout_rmse_2" in s["world_model"]
    wm = WorldModel.from_pretrained(out / "model")
    assert tuple(wm.env["pixel_shape"]) == (1, 4, 16, 256)
    assert wm.cfg.frozen_steps == 2 and wm.cfg.contrast_weight == 5.0  # the flag over the preset
    # two on-policy rounds: 64 planner steps each appended, a new predictor on the same encoder
    # after each
    from vjepa_agent.data.rollouts import RolloutStore

    first = WorldModel.from_pretrained(out / "rounds" / "model-0")
    second = WorldModel.from_pretrained(out / "rounds" / "model-1")
    assert first.cfg.steps == 3 and second.cfg.steps == 0 and wm.cfg.steps == 0
    assert wm.cfg.encoder_from == str(out / "rounds" / "model-1")
    for name, w in wm.encoder.state_dict().items():
        assert torch.equal(w, first.encoder.state_dict()[name]), name
    assert not torch.equal(wm.predictor.latent_out.weight, second.predictor.latent_out.weight)
    assert RolloutStore.open(out / "data").meta["num_transitions"] == 200 + 2 * 64
    assert [r["round"] for r in s["rounds"]] == [1, 2] and s["rounds"][1]["steps"] == 64
    run_script("plan.py", *args)  # the cached model, with the rounds that made it
    again = json.loads((out / "summary.json").read_text())
    assert again["model_reused"] and again["rounds"] == s["rounds"]
    other = "reconstruction" if kind == "jepa" else "jepa"
    args = ["--env", envs.NOISY_CARTPOLE_ID, "--model", out / "model", "--pixel-encoder", other]
    proc = run_script("plan.py", *args, check=False)
    assert proc.returncode == 2 and f"has a {kind} pixel encoder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_closed_loop_cartpole_from_state_balances_far_above_random(tmp_path):
    """The preset's objective and planner on a tiny state model (2k random steps, 300 training
    steps) hold the pole for the whole capped episode, where random actions last ~28 steps: a
    cost with a flipped sign, a planner that keeps the worst sequence, or a model that ignores
    the action falls far below this bar."""
    from vjepa_agent.plan_run import run_plan

    cfg = PlanConfig(
        env="CartPole-v1",
        obs="state",
        out=tmp_path / "run",
        episodes=3,
        collect_steps=2000,
        train_steps=300,
        max_episode_steps=200,
        video=False,
    )
    s = run_plan(cfg)
    assert s["random_mean_return"] < 50
    assert s["min_return"] >= 150, s["returns"]


def test_latent_objective_terms_have_their_sign_and_weight():
    """Each term of LatentObjective, alone and weighted, against the cost written out by hand."""
    torch.manual_seed(0)
    wm = WorldModel(WorldModelConfig(predictor_dim=32, predictor_depth=1), STATE_SPEC).eval()
    traj = torch.randn(2, 5, 4, 4)  # (E, S, H, Z)
    goal = torch.randn(4)
    with torch.no_grad():
        # goal (p = 2): the mean squared error over latent dims, summed over the horizon
        cost = LatentObjective(goal=goal, goal_weight=3.0, reward_weight=0.0)(wm, traj)
        torch.testing.assert_close(cost, 3.0 * (traj - goal).pow(2).mean(-1).sum(-1))
        # termination logits summed over the horizon
        cost = LatentObjective(termination_logit_weight=0.5, reward_weight=0.0)(wm, traj)
        torch.testing.assert_close(cost, 0.5 * wm.termination_logits(traj).sum(-1))
        # rewards: minus the discounted return of the steps survived so far (the terminating
        # step's reward counts), plus the penalty times the chance of terminating in the horizon
        r, p = wm.reward(traj), wm.termination(traj)  # (E, S, H)
        alive_before = torch.cumprod(
            torch.cat([torch.ones_like(p[..., :1]), 1 - p[..., :-1]], -1), -1
        )
        expected = (0.9 ** torch.arange(4) * alive_before * r).sum(-1)
        ends = 1 - torch.prod(1 - p, -1)
        cost = LatentObjective(reward_weight=2.0, discount=0.9, termination_penalty=7.0)(wm, traj)
        torch.testing.assert_close(cost, -2.0 * expected + 7.0 * ends)  # the weight is the rewards'
        # the terms add up
        both = LatentObjective(goal=goal, goal_weight=3.0, termination_logit_weight=0.5)(wm, traj)
        torch.testing.assert_close(
            both,
            3.0 * (traj - goal).pow(2).mean(-1).sum(-1)
            + 0.5 * wm.termination_logits(traj).sum(-1)
            - (0.99 ** torch.arange(4) * alive_before * r).sum(-1),
        )
    # signs: more reward costs less, a likelier termination costs more
    base = planning.reward_cost(torch.ones(1, 1, 3), torch.full((1, 1, 3), 0.1), 0.9, 5.0)
    richer = planning.reward_cost(torch.full((1, 1, 3), 2.0), torch.full((1, 1, 3), 0.1), 0.9, 5.0)
    riskier = planning.reward_cost(torch.ones(1, 1, 3), torch.full((1, 1, 3), 0.5), 0.9, 5.0)
    assert float(richer) < float(base) < float(riskier)


def test_objective_on_distinct_imagined_latents_equals_it_on_every_step():
    """The agent's model call: `rollout_nodes` (each distinct action prefix once) and the
    objective's heads on those latents, gathered, give the costs of the plain rollout."""
    torch.manual_seed(0)
    cfg = WorldModelConfig(predictor_dim=32, predictor_depth=2, failure_weight=1.0)
    wm = WorldModel(cfg, STATE_SPEC).eval()
    for p in wm.parameters():  # away from the init (zero output layers)
        p.data.normal_(0, 0.3)
    z = torch.randn(2, 1, wm.latent_shape[0])  # 2 envs, 64 samples each from one start
    acts = torch.randint(0, 2, (2, 64, 6))
    objective = LatentObjective(
        goal=torch.randn(4), goal_weight=0.5, termination_logit_weight=0.3,
        failure_logit_weight=0.2, reward_weight=2.0, termination_penalty=1.0,
    )  # fmt: skip
    with torch.no_grad():
        nodes, index = wm.rollout_nodes(z, acts)
        assert index.shape == (2, 64, 6) and len(nodes) < index.numel()  # prefixes were shared
        plain = wm.rollout(z, acts, plain=True)
        torch.testing.assert_close(nodes[index], plain, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            objective(wm, nodes, index), objective(wm, plain), atol=1e-4, rtol=1e-5
        )
        # one start per sequence: every step is its own node
        z_each = torch.randn(2, 64, wm.latent_shape[0])
        nodes, index = wm.rollout_nodes(z_each, acts)
        assert len(nodes) == index.numel()
        torch.testing.assert_close(nodes[index], wm.rollout(z_each, acts, plain=True))


def test_bench_plan_times_both_conditions_and_both_model_calls(tmp_path, run_script):
    """vjepa-bench-plan on a saved model: both conditions, the time split, and the library's
    model call against the plain one on the same recorded inputs (equal costs)."""
    torch.manual_seed(0)
    wm = WorldModel(WorldModelConfig(predictor_dim=32, predictor_depth=1), STATE_SPEC)
    for p in wm.predictor.parameters():  # a predictor that moves the latent
        p.data.normal_(0, 0.2)
    wm.save_pretrained(tmp_path / "model")
    out = tmp_path / "bench"
    args = ["--model", tmp_path / "model", "--obs", "state", "--episodes", "1"]
    run_script("bench_plan.py", *args, "--max-episode-steps", "6", "--out", out)
    s = json.loads((out / "summary.json").read_text())
    for condition in ("quiet", "contended"):
        c = s[condition]
        assert c["decisions"] == 6 and c["ms_per_action"] > 0
        assert c["model_call_ms_library"] > 0 and c["model_call_ms_plain"] > 0
        assert (
            c["imagined_latents_per_call"] < c["imagined_steps_per_call"] == 128 * 10
        )  # the preset: 128 samples of 10 steps
        assert c["max_rel_cost_diff_library_vs_plain"] < 1e-5
    assert s["replayed_calls"] == 12  # the warm-up episode's and the timed one's decisions
    proc = run_script("bench_plan.py", "--obs", "state", check=False)
    assert proc.returncode == 2 and "needs --model" in proc.stderr


def test_a_run_folder_reuses_only_the_collection_the_flags_ask_for(tmp_path):
    """out/data from other flags (start spread, seed, size) is refused with one line, untouched."""
    from vjepa_agent.config import PlanConfig
    from vjepa_agent.plan_run import get_world_model

    data = tmp_path / "run" / "data"
    ranges = envs.starts.default_start_ranges("CartPole-v1", "position")
    envs.collect_rollouts("CartPole-v1", 40, out=data, obs="state", seed=0, start_ranges=ranges)
    before = (data / "meta.json").read_bytes()
    base = dict(env="CartPole-v1", obs="state", exploring_starts=True, collect_steps=40)
    for flags, says in (
        (dict(start_spread="state"), "start_ranges"),
        (dict(start_spread="position", seed=1), "seed 0 (asked: 1)"),
        (dict(start_spread="position", collect_steps=80), "40 steps (asked: 80)"),
        (dict(start_spread="position", sticky_actions=0.5), "sticky_actions"),
    ):
        with pytest.raises(UserError, match="holds another collection") as err:
            get_world_model(PlanConfig(**{**base, **flags}), tmp_path / "run", env=None)
        assert says in str(err.value) and "\n" not in str(err.value)
    assert (data / "meta.json").read_bytes() == before
    assert not (tmp_path / "run" / "model").exists()


def test_mirrored_planning_scores_a_scene_and_its_mirror_image_alike():
    """With mirror_actions the cost of a sequence is the mean of its own and its mirror's (the
    mirror image of the frames, the mirrored actions): so a scene and its mirror image give
    mirrored sequences the same cost, whatever the model, and each half is the plain cost."""
    from vjepa_agent.config import EncoderConfig

    spec = dict(STATE_SPEC, obs="pixels", pixel_shape=[1, 4, 16, 64])
    enc = EncoderConfig(dim=32, depth=1, heads=2, patch_size=8, tubelet_size=4, pos_embed="sincos")
    torch.manual_seed(0)
    wm = WorldModel(WorldModelConfig(pixel_encoder="jepa", encoder=enc, latent_dim=8), spec).eval()
    env = envs.make_env("CartPole-v1", obs="state")
    objective = LatentObjective(termination_logit_weight=1.0, reward_weight=0.0)
    cfg = PlannerConfig(horizon=4, samples=8, elites=2, iterations=1, mirror_actions=[1, 0])
    agent = MPCAgent(wm, env.action_space, objective, cfg)
    plain = MPCAgent(wm, env.action_space, objective, PlannerConfig(horizon=4, samples=8))
    obs = torch.randint(0, 256, (2, 1, 4, 16, 64), dtype=torch.uint8)
    seqs = torch.randint(0, 2, (2, 8, 4, 1))
    with torch.no_grad():
        z, z_m = wm.encode(obs), wm.encode(obs.flip(-1))
        both = agent.sequence_costs(z, seqs, z_m)
        torch.testing.assert_close(both, agent.sequence_costs(z_m, 1 - seqs, z))
        mean = 0.5 * (plain.sequence_costs(z, seqs) + plain.sequence_costs(z_m, 1 - seqs))
        torch.testing.assert_close(both, mean)
        assert not torch.allclose(both, plain.sequence_costs(z, seqs))  # the model is not symmetric
        assert agent(obs.numpy()).shape == (2,)  # a collection policy over 2 envs
    bad = [(dict(mirror_actions=[0, 0]), "each of the 2 actions once")]
    for kw, message in bad:
        with pytest.raises(UserError, match=message):
            MPCAgent(wm, env.action_space, objective, PlannerConfig(**kw))
    state_wm = WorldModel(WorldModelConfig(), STATE_SPEC)
    with pytest.raises(UserError, match="needs pixel observations"):
        MPCAgent(state_wm, env.action_space, objective, PlannerConfig(mirror_actions=[1, 0]))
