"""Numeric tests of the planners and cost functions (tiny sizes, CPU)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from vjepa_agent.config import PlannerConfig
from vjepa_agent.errors import UserError
from vjepa_agent.planning import (
    CONTINUOUS_PLANNERS,
    DISCRETE_PLANNERS,
    PLANNERS,
    action_space_kind,
    action_space_nvec,
    categorical_cem,
    cem,
    check_planner_fits,
    gaussian_init,
    goal_distance,
    make_planner,
    mppi,
    reward_cost,
    shift_warm_start,
    uniform_probs,
)


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def quadratic(target: torch.Tensor):
    """cost (E, S) = squared distance of actions (E, S, H, A) to target (E, H, A)."""
    return lambda a: (a - target[:, None]).square().sum(dim=(-1, -2))


def hamming(hidden: torch.Tensor):
    """cost (E, S) = number of sub-actions that differ from hidden (E, H, K)."""
    return lambda a: (a != hidden[:, None]).sum(dim=(-1, -2)).float()


LOW, HIGH = -torch.ones(2), torch.ones(2)
TARGET = torch.tensor(
    [
        [[0.3, -0.5], [0.0, 0.7], [-0.2, 0.1]],  # inside the box
        [[1.5, -0.4], [0.2, -2.0], [0.5, 0.5]],  # partly outside: optimum is the clipped target
    ]
)


@pytest.mark.parametrize("planner", [cem, mppi])
def test_continuous_planners_find_quadratic_minimum(planner):
    mean, std = gaussian_init(LOW, HIGH, num_envs=2, horizon=3)
    result = planner(
        quadratic(TARGET),
        mean,
        std,
        LOW,
        HIGH,
        num_samples=128,
        iterations=10,
        generator=gens(0, 1),
    )
    optimum = TARGET.clamp(-1, 1)
    assert result.actions.shape == (2, 3, 2) and result.mean.shape == result.std.shape == (2, 3, 2)
    # worst error over 40 seeds was 0.08 (actions) and 0.14 (MPPI mean)
    assert torch.allclose(result.actions, optimum, atol=0.2)
    assert torch.allclose(result.mean, optimum, atol=0.2)
    assert (result.actions.abs() <= 1).all()
    # the reported cost is the cost of the returned plan
    assert torch.allclose(result.cost, quadratic(TARGET)(result.actions[:, None])[:, 0])
    assert result.num_cost_calls == 10


@pytest.mark.parametrize("planner", [cem, mppi])
def test_point_reaches_target_through_dynamics(planner):
    # 1-D point, x_{t+1} = x_t + v_t with velocity v in [-1, 1]; reach x = 3 in 5 steps
    def cost_fn(v):  # (E, S, 5, 1) -> (E, S)
        x = torch.zeros(v.shape[:2])
        for t in range(v.shape[2]):
            x = x + v[:, :, t, 0]
        return (x - 3.0).square() + 0.01 * v.square().sum(dim=(-1, -2))

    low, high = -torch.ones(1), torch.ones(1)
    mean, std = gaussian_init(low, high, num_envs=1, horizon=5)
    result = planner(cost_fn, mean, std, low, high, num_samples=64, iterations=6, generator=gens(3))
    assert abs(result.actions.sum().item() - 3.0) < 0.1
    # never worse than the warm start (the mean is one of the samples)
    assert result.cost.item() <= cost_fn(mean[:, None]).item()


def test_plan_never_worse_than_a_good_warm_start():
    mean = TARGET.clamp(-1, 1)  # already optimal
    result = cem(quadratic(TARGET), mean, 0.5, LOW, HIGH, num_samples=8, num_elites=2, iterations=2)
    assert torch.equal(result.actions, mean)


@pytest.mark.parametrize("nvec", [[3], [2, 3]])
def test_categorical_cem_finds_hidden_sequence(nvec):
    hidden = torch.stack(
        [
            torch.tensor([[i % n for n in nvec] for i in order])
            for order in ([2, 0, 1, 1, 0, 2], [1, 1, 0, 2, 2, 0])
        ]
    )  # (E=2, H=6, K)
    probs = uniform_probs(nvec, num_envs=2, horizon=6)
    result = categorical_cem(
        hamming(hidden), probs, nvec, num_samples=64, iterations=5, generator=gens(4, 5)
    )
    assert result.actions.dtype == torch.long and result.actions.shape == (2, 6, len(nvec))
    assert torch.equal(result.actions, hidden)
    assert torch.equal(result.cost, torch.zeros(2))
    assert result.probs.shape == (2, 6, len(nvec), max(nvec))
    assert torch.allclose(result.probs.sum(-1), torch.ones(2, 6, len(nvec)))
    if nvec == [2, 3]:  # the padded third choice of the binary sub-action stays impossible
        assert (result.probs[:, :, 0, 2] == 0).all()


def test_categorical_samples_respect_nvec_and_include_argmax():
    nvec = [2, 3]
    probs = uniform_probs(nvec, 1, 4)
    probs[0, :, 1] = torch.tensor([0.0, 0.0, 1.0])  # second sub-action always picks 2
    seen = []

    def cost_fn(a):
        seen.append(a.clone())
        return torch.zeros(a.shape[:2])

    categorical_cem(cost_fn, probs, nvec, num_samples=32, num_elites=4, iterations=1, min_prob=0.0)
    a = seen[0]
    assert a.shape == (1, 32, 4, 2)
    assert (a[..., 0] < 2).all() and (a[..., 1] == 2).all()
    assert torch.equal(a[:, 0], probs.argmax(-1))


def test_batched_planning_equals_per_env_planning():
    mean, std = gaussian_init(LOW, HIGH, num_envs=3, horizon=3)
    target = torch.cat([TARGET, -TARGET[:1]])  # (3, 3, 2)
    seeds = (10, 11, 12)
    for planner in (cem, mppi):
        kw = dict(num_samples=32, num_elites=8, iterations=3)
        batched = planner(quadratic(target), mean, std, LOW, HIGH, generator=gens(*seeds), **kw)
        for e in range(3):
            alone = planner(
                quadratic(target[e : e + 1]),
                mean[e : e + 1],
                std[e : e + 1],
                LOW,
                HIGH,
                generator=gens(seeds[e]),
                **kw,
            )
            assert torch.equal(batched.actions[e], alone.actions[0])
            assert torch.equal(batched.mean[e], alone.mean[0])
            assert torch.equal(batched.std[e], alone.std[0])
            assert torch.equal(batched.cost[e], alone.cost[0])

    nvec = [2, 3]
    hidden = torch.tensor([[[1, 2]] * 4, [[0, 1]] * 4, [[1, 0]] * 4])  # (3, H=4, K=2)
    probs = uniform_probs(nvec, 3, 4)
    batched = categorical_cem(
        hamming(hidden), probs, nvec, num_samples=16, num_elites=4, generator=gens(*seeds)
    )
    for e in range(3):
        alone = categorical_cem(
            hamming(hidden[e : e + 1]),
            probs[e : e + 1],
            nvec,
            num_samples=16,
            num_elites=4,
            generator=gens(seeds[e]),
        )
        assert torch.equal(batched.actions[e], alone.actions[0])
        assert torch.equal(batched.probs[e], alone.probs[0])


def test_same_seed_same_result_and_cost_calls_counted():
    mean, std = gaussian_init(LOW, HIGH, num_envs=2, horizon=3)
    calls = []

    def counting(a):
        calls.append(a.shape)
        return quadratic(TARGET)(a)

    kw = dict(num_samples=16, num_elites=None, iterations=4)
    a = mppi(counting, mean, std, LOW, HIGH, generator=torch.Generator().manual_seed(7), **kw)
    b = mppi(counting, mean, std, LOW, HIGH, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.mean, b.mean)
    assert a.num_cost_calls == 4 and len(calls) == 8 and calls[0] == (2, 16, 3, 2)
    kw = dict(num_samples=16, num_elites=4, iterations=1)
    c = cem(
        quadratic(TARGET), mean, std, LOW, HIGH, generator=torch.Generator().manual_seed(8), **kw
    )
    d = cem(
        quadratic(TARGET), mean, std, LOW, HIGH, generator=torch.Generator().manual_seed(9), **kw
    )
    assert not torch.equal(c.mean, d.mean)


def test_shift_warm_start():
    x = torch.arange(12.0).reshape(2, 3, 2)  # (E, H, A)
    out = shift_warm_start(x, torch.tensor([-1.0, -2.0]))
    assert torch.equal(out[:, :2], x[:, 1:])
    assert torch.equal(out[:, 2], torch.tensor([[-1.0, -2.0], [-1.0, -2.0]]))
    init = torch.full_like(x, 9.0)
    assert torch.equal(shift_warm_start(x, init)[:, 2], torch.full((2, 2), 9.0))
    assert torch.equal(shift_warm_start(x, 0.5)[:, 2], torch.full((2, 2), 0.5))
    probs = uniform_probs([2, 3], 2, 3)
    probs[:, 1] = 0.0
    probs[:, 1, :, 0] = 1.0
    shifted = shift_warm_start(probs, uniform_probs([2, 3], 2, 3))
    assert torch.equal(shifted[:, 0], probs[:, 1]) and torch.equal(shifted[:, 2], probs[:, 2])


def test_goal_distance_hand_computed():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, -1.0]]]])  # (E=1, S=1, H=2, D=2)
    goal = torch.tensor([[1.0, 1.0]])  # (E=1, D=2)
    # step 0: |0|,|1| ; step 1: |2|,|-2|
    assert torch.allclose(goal_distance(pred, goal, p=1), torch.tensor([[2.0]]))
    assert torch.allclose(goal_distance(pred, goal, p=1, final_only=False), torch.tensor([[2.5]]))
    assert torch.allclose(goal_distance(pred, goal, p=2), torch.tensor([[4.0]]))
    assert torch.allclose(goal_distance(pred, goal, p=2, final_only=False), torch.tensor([[4.5]]))
    # latent dims beyond one are averaged too: (E, S, H, N, D) with goal (E, N, D)
    assert goal_distance(torch.zeros(2, 5, 3, 4, 6), torch.ones(2, 4, 6)).shape == (2, 5)


def test_reward_cost_hand_computed():
    rewards = torch.tensor([[[1.0, 2.0, 4.0]]])  # (E=1, S=1, H=3)
    term = torch.tensor([[[0.5, 0.0, 0.5]]])
    # alive before each step: 1, 0.5, 0.5; discount 0.5: weights 1, 0.5, 0.25
    # return = 1*1*1 + 2*0.5*0.5 + 4*0.5*0.25 = 2.0 ; P(terminate) = 1 - 0.5*1*0.5 = 0.75
    cost = reward_cost(rewards, term, discount=0.5, termination_penalty=10.0)
    assert torch.allclose(cost, torch.tensor([[-2.0 + 7.5]]))
    assert torch.allclose(reward_cost(rewards, term), torch.tensor([[-(1.0 + 1.0 + 2.0)]]))
    assert torch.allclose(reward_cost(rewards), torch.tensor([[-7.0]]))


def test_action_space_helpers():
    assert action_space_kind(gym.spaces.Box(-2, 2, (1,))) == "continuous"
    assert action_space_kind(gym.spaces.Discrete(2)) == "discrete"
    assert action_space_nvec(gym.spaces.Discrete(2)) == [2]
    for multi in (gym.spaces.MultiDiscrete([2, 3]), gym.spaces.MultiBinary(3)):
        with pytest.raises(UserError, match="the world model cannot embed"):
            action_space_kind(multi, "Foo-v0")  # before any data is collected
    with pytest.raises(UserError, match="unbounded"):
        action_space_kind(gym.spaces.Box(-np.inf, np.inf, (2,)), "Foo-v0")
    with pytest.raises(UserError, match="cannot embed"):
        action_space_kind(gym.spaces.Dict({"a": gym.spaces.Discrete(2)}))
    with pytest.raises(UserError, match="cannot embed"):
        action_space_kind(gym.spaces.Tuple((gym.spaces.Discrete(2),)))


def test_check_planner_fits():
    check_planner_fits("cem", gym.spaces.Box(-2, 2, (1,)), "Pendulum-v1")
    check_planner_fits("categorical_cem", gym.spaces.Discrete(2), "CartPole-v1")
    with pytest.raises(UserError) as err:
        check_planner_fits("cem", gym.spaces.Discrete(2), "CartPole-v1")
    assert str(err.value) == (
        "planner 'cem' needs a continuous (Box) action space but CartPole-v1 has Discrete(2); "
        "use --planner categorical_cem"
    )
    with pytest.raises(UserError, match="use --planner cem or --planner mppi"):
        check_planner_fits("categorical_cem", gym.spaces.Box(-2, 2, (1,)))
    with pytest.raises(UserError, match="unknown planner"):
        check_planner_fits("random", gym.spaces.Discrete(2))


@pytest.mark.parametrize("name", list(PLANNERS))
def test_every_registered_planner_follows_the_interface(name):
    # init -> plan -> shift -> restart keep the (E, H, ...) shapes the agent relies on
    cfg = PlannerConfig(samples=8, elites=2, iterations=2)
    space = gym.spaces.Discrete(3) if name in DISCRETE_PLANNERS else gym.spaces.Box(-1, 1, (2,))
    planner = make_planner(name, cfg, space)
    assert planner.name == name and isinstance(planner, PLANNERS[name])
    num_envs, horizon = 3, 4
    dist = planner.init(num_envs, horizon)
    assert all(v.shape[:2] == (num_envs, horizon) for v in dist.values())

    def cost_fn(actions: torch.Tensor) -> torch.Tensor:
        return actions.float().square().flatten(2).sum(-1)  # (E, S)

    result = planner.plan(cost_fn, dist, gens(0, 1, 2))
    width = 1 if name in DISCRETE_PLANNERS else 2  # one index, or A = 2 action dims
    assert result.actions.shape == (num_envs, horizon, width) and result.cost.shape == (num_envs,)
    assert result.num_cost_calls == cfg.iterations
    assert result.distribution().keys() == dist.keys()
    shifted = planner.shift(result.distribution())
    fresh = planner.init(num_envs, horizon)
    for k, v in shifted.items():
        assert v.shape == dist[k].shape
        assert torch.equal(v[:, :-1], result.distribution()[k][:, 1:])
        assert torch.equal(v[:, -1], fresh[k][:, -1])
    restarted = planner.restart(shifted, torch.tensor([False, True, False]))
    for k, v in restarted.items():
        assert torch.equal(v[1], fresh[k][1]) and torch.equal(v[[0, 2]], shifted[k][[0, 2]])
    # the object plans exactly as the function it wraps
    if name in CONTINUOUS_PLANNERS:
        fn = cem if name == "cem" else mppi
        kw = dict(num_samples=8, num_elites=2, iterations=2, momentum=cfg.momentum)
        if name == "mppi":
            kw["temperature"] = cfg.temperature
        direct = fn(cost_fn, dist["mean"], dist["std"], -1.0, 1.0, generator=gens(0, 1, 2), **kw)
    else:
        kw = dict(num_samples=8, num_elites=2, iterations=2, momentum=cfg.momentum)
        direct = categorical_cem(cost_fn, dist["probs"], [3], generator=gens(0, 1, 2), **kw)
    assert torch.equal(direct.actions, result.actions)


def test_make_planner_resolves_auto_and_names_unknown_planners_in_one_line():
    assert make_planner("auto", PlannerConfig(), gym.spaces.Discrete(2)).name == "categorical_cem"
    assert make_planner("auto", PlannerConfig(), gym.spaces.Box(-1, 1, (1,))).name == "cem"
    with pytest.raises(UserError) as err:
        make_planner("random", PlannerConfig(), gym.spaces.Discrete(2))
    assert str(err.value) == "unknown planner 'random'; choose one of cem, mppi, categorical_cem."
    with pytest.raises(UserError, match="use --planner categorical_cem"):
        make_planner("mppi", PlannerConfig(), gym.spaces.Discrete(2), "CartPole-v1")


def test_bad_inputs_raise_user_errors():
    mean, std = gaussian_init(LOW, HIGH, num_envs=2, horizon=3)
    with pytest.raises(UserError, match="cost_fn returned"):
        cem(lambda a: a.sum(-1), mean, std, LOW, HIGH, num_samples=4, num_elites=2, iterations=1)
    with pytest.raises(UserError, match="num_elites"):
        cem(quadratic(TARGET), mean, std, LOW, HIGH, num_samples=4, num_elites=5)
    with pytest.raises(UserError, match="generators"):
        mppi(
            quadratic(TARGET),
            mean,
            std,
            LOW,
            HIGH,
            num_samples=4,
            num_elites=2,
            generator=gens(1, 2, 3),
        )
    with pytest.raises(UserError, match="do not fit nvec"):
        categorical_cem(hamming(torch.zeros(2, 3, 1)), uniform_probs([3], 2, 3), [4])
