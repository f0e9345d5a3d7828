"""Planners as pure functions over tensors, and the cost functions they minimise.

Shapes: E environments planned at once, S samples, H horizon, A action dim, K sub-actions of a
(Multi)Discrete space, N = max(nvec) choices per sub-action (padded).

A cost function is a callable `cost_fn(actions) -> costs`, lower is better:
  continuous planners (`cem`, `mppi`):  actions (E, S, H, A) float  -> costs (E, S)
  `categorical_cem`:                    actions (E, S, H, K) long   -> costs (E, S)
It must accept any S (the planners always pass `num_samples`).

Randomness and batching. Every planner takes `generator`, which is one of
  None                        the global torch RNG (not reproducible);
  a torch.Generator           one stream for all envs: reproducible, but env e's noise depends on E;
  a sequence of E generators  one stream per env: env e draws its noise only from `generator[e]`,
                              in the same order whatever E is, so planning E envs at once gives
                              exactly the plans of planning each env alone with its own generator.
The agent uses the last form, e.g. `[seeding.generator(seed, "plan", e) for e in range(E)]`.
Noise is drawn on the generator's device (CPU generators work for CUDA inputs, and a seed gives the
same samples on every device) and moved to the device of the inputs; every result lives there.

Warm start: feed back `result.mean` / `result.std` (or `result.probs`) through `shift_warm_start`
after executing the first action.

The `Planner` objects (`PLANNERS`, `make_planner`) bind these functions to their settings and an
action space behind one interface, `init` -> `plan` -> `shift`, which is what `MPCAgent` uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from vjepa_agent.errors import UserError, require

if TYPE_CHECKING:
    from vjepa_agent.config import PlannerConfig

CostFn = Callable[[torch.Tensor], torch.Tensor]
Generators = torch.Generator | Sequence[torch.Generator] | None

CONTINUOUS_PLANNERS = ("cem", "mppi")
DISCRETE_PLANNERS = ("categorical_cem",)


@dataclass
class PlanResult:
    """What a planner returns.

    actions: (E, H, A) float or (E, H, K) long; the lowest-cost sequence sampled in any iteration
        (the warm-start mean / argmax is always one of the samples, so the plan is never worse than
        the warm start under `cost_fn`). Execute `actions[:, 0]`.
    cost: (E,) the cost of `actions`.
    num_cost_calls: how many times `cost_fn` was called (one per iteration).
    mean, std: (E, H, A) the final Gaussian (continuous planners), for the next warm start.
    probs: (E, H, K, N) the final categorical distributions (categorical_cem), for the next warm start.
    """

    actions: torch.Tensor
    cost: torch.Tensor
    num_cost_calls: int
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    probs: torch.Tensor | None = None

    def distribution(self) -> dict[str, torch.Tensor]:
        """The final sampling distribution, {"mean", "std"} or {"probs"}, each (E, H, ...)."""
        dist = {"mean": self.mean, "std": self.std, "probs": self.probs}
        return {k: v for k, v in dist.items() if v is not None}


# ----------------------------------------------------------------------------------------------
# helpers: per-env noise, cost evaluation, best-so-far bookkeeping


def _per_env_generators(generator: Generators, num_envs: int) -> list[torch.Generator] | None:
    """None, or a list of E generators (one shared generator is returned as a 1-list)."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        return [generator]
    gens = list(generator)
    require(
        len(gens) == num_envs,
        f"got {len(gens)} generators for {num_envs} environments; pass one torch.Generator per env.",
    )
    return gens


def _standard_normal(
    gens: list[torch.Generator] | None,
    shape: tuple[int, ...],
    num_envs: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Standard normal noise (E, *shape); env e's slice comes from gens[e] alone (see module doc)."""
    if gens is None:
        return torch.randn((num_envs, *shape), device=device, dtype=dtype)
    if len(gens) == 1:  # one shared stream (or E == 1)
        g = gens[0]
        return torch.randn((num_envs, *shape), generator=g, device=g.device, dtype=dtype).to(device)
    noise = [torch.randn(shape, generator=g, device=g.device, dtype=dtype) for g in gens]
    return torch.stack([n.to(device) for n in noise])


def _evaluate(cost_fn: CostFn, actions: torch.Tensor) -> torch.Tensor:
    """costs (E, S) of actions (E, S, ...); NaN costs count as +inf so they never win."""
    costs = cost_fn(actions)
    num_envs, num_samples = actions.shape[:2]
    if not isinstance(costs, torch.Tensor) or costs.shape != (num_envs, num_samples):
        got = tuple(costs.shape) if isinstance(costs, torch.Tensor) else type(costs).__name__
        raise UserError(
            f"cost_fn returned {got} but planning needs costs of shape (E, S) = {(num_envs, num_samples)}."
        )
    return torch.nan_to_num(costs, nan=math.inf)


def _update_best(
    best_actions: torch.Tensor,
    best_cost: torch.Tensor,
    samples: torch.Tensor,
    costs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep, per env, the lowest-cost sequence seen so far. samples (E, S, H, X), costs (E, S)."""
    cost, idx = costs.min(dim=1)  # (E,)
    winner = samples[torch.arange(samples.shape[0], device=samples.device), idx]  # (E, H, X)
    better = cost < best_cost  # (E,)
    best_actions = torch.where(better[:, None, None], winner, best_actions)
    best_cost = torch.where(better, cost, best_cost)
    return best_actions, best_cost


def _check_gaussian(
    mean: torch.Tensor,
    std: torch.Tensor | float,
    low: torch.Tensor | float,
    high: torch.Tensor | float,
    num_samples: int,
    num_elites: int | None,
    iterations: int,
    momentum: float,
    min_std: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate the planner inputs; return std (E, H, A) and low/high (A,) on mean's device."""
    require(mean.dim() == 3, f"mean must have shape (E, H, A), got {tuple(mean.shape)}.")
    require(mean.is_floating_point(), f"mean must be a float tensor, got {mean.dtype}.")
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    low = torch.as_tensor(low, dtype=mean.dtype, device=mean.device)
    high = torch.as_tensor(high, dtype=mean.dtype, device=mean.device)
    try:
        std = std.expand_as(mean)
        low, high = low.expand(mean.shape[-1]), high.expand(mean.shape[-1])
    except RuntimeError:
        raise UserError(
            f"std {tuple(std.shape)}, low {tuple(low.shape)} and high {tuple(high.shape)} must "
            f"broadcast to mean {tuple(mean.shape)} and its action dim {mean.shape[-1]}."
        ) from None
    require(bool((low <= high).all()), "every action's lower bound must be <= its upper bound.")
    require(num_samples >= 1, f"num_samples must be >= 1, got {num_samples}.")
    require(
        num_elites is None or 1 <= num_elites <= num_samples,
        f"num_elites must be between 1 and num_samples={num_samples}, got {num_elites}.",
    )
    require(iterations >= 1, f"iterations must be >= 1, got {iterations}.")
    require(0.0 <= momentum < 1.0, f"momentum must be in [0, 1), got {momentum}.")
    require(min_std >= 0.0, f"min_std must be >= 0, got {min_std}.")
    return std, low, high


def _sample_gaussian(
    mean: torch.Tensor,
    std: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    num_samples: int,
    gens: list[torch.Generator] | None,
) -> torch.Tensor:
    """(E, S, H, A) samples clipped to [low, high]; sample 0 is the mean itself."""
    num_envs, horizon, adim = mean.shape
    noise = _standard_normal(
        gens, (num_samples - 1, horizon, adim), num_envs, mean.device, mean.dtype
    )
    samples = mean[:, None] + std[:, None] * noise  # (E, S-1, H, A)
    samples = torch.cat([mean[:, None], samples], dim=1)  # (E, S, H, A)
    return torch.clamp(samples, low, high)


def _take_elites(
    samples: torch.Tensor, costs: torch.Tensor, num_elites: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The num_elites lowest-cost samples (E, M, H, X) and their costs (E, M)."""
    elite_cost, idx = torch.topk(costs, num_elites, dim=1, largest=False)  # (E, M)
    elites = torch.gather(
        samples, 1, idx[:, :, None, None].expand(-1, -1, *samples.shape[2:])
    )  # (E, M, H, X)
    return elites, elite_cost


# ----------------------------------------------------------------------------------------------
# continuous planners


def cem(
    cost_fn: CostFn,
    mean: torch.Tensor,
    std: torch.Tensor | float,
    low: torch.Tensor | float,
    high: torch.Tensor | float,
    *,
    num_samples: int = 256,
    num_elites: int = 32,
    iterations: int = 6,
    momentum: float = 0.1,
    min_std: float = 0.05,
    generator: Generators = None,
) -> PlanResult:
    """Gaussian cross-entropy method over continuous action sequences.

    mean, std: (E, H, A) warm start (std may be anything broadcastable to it);
    low, high: (A,) action bounds. Per iteration:
      1. sample S - 1 sequences mean + std * noise, add the mean itself, clip all to [low, high]
         -> (E, S, H, A);
      2. costs = cost_fn(samples) -> (E, S); remember the lowest-cost sequence seen so far;
      3. take the num_elites lowest-cost samples (E, M, H, A);
      4. mean <- momentum * mean + (1 - momentum) * elite mean,
         std  <- momentum * std  + (1 - momentum) * elite std, then std >= min_std.
    Returns the best sequence seen (`actions`, `cost`) and the final `mean`, `std`.
    """
    std, low, high = _check_gaussian(
        mean, std, low, high, num_samples, num_elites, iterations, momentum, min_std
    )
    gens = _per_env_generators(generator, mean.shape[0])
    mean = torch.clamp(mean, low, high)
    best_actions, best_cost = mean.clone(), mean.new_full((mean.shape[0],), math.inf)
    for _ in range(iterations):
        # 1-2. sample and score
        samples = _sample_gaussian(mean, std, low, high, num_samples, gens)  # (E, S, H, A)
        costs = _evaluate(cost_fn, samples)  # (E, S)
        best_actions, best_cost = _update_best(best_actions, best_cost, samples, costs)
        # 3-4. refit the Gaussian to the elites
        elites, _ = _take_elites(samples, costs, num_elites)  # (E, M, H, A)
        elite_mean = elites.mean(dim=1)
        elite_std = (elites - elite_mean[:, None]).square().mean(dim=1).sqrt()
        mean = momentum * mean + (1.0 - momentum) * elite_mean
        std = (momentum * std + (1.0 - momentum) * elite_std).clamp_min(min_std)
    return PlanResult(best_actions, best_cost, iterations, mean=mean, std=std)


def mppi(
    cost_fn: CostFn,
    mean: torch.Tensor,
    std: torch.Tensor | float,
    low: torch.Tensor | float,
    high: torch.Tensor | float,
    *,
    num_samples: int = 256,
    iterations: int = 6,
    temperature: float = 0.5,
    num_elites: int | None = 64,
    momentum: float = 0.0,
    min_std: float = 0.05,
    generator: Generators = None,
) -> PlanResult:
    """MPPI-weighted refit over elites (the TD-MPC2 hybrid), or over all samples if num_elites=None.

    mean, std: (E, H, A) warm start (std may be anything broadcastable to it);
    low, high: (A,) action bounds. Per iteration:
      1. sample S - 1 sequences mean + std * noise, add the mean itself, clip all to [low, high]
         -> (E, S, H, A);
      2. costs = cost_fn(samples) -> (E, S); remember the lowest-cost sequence seen so far;
      3. take the num_elites lowest-cost samples (E, M, H, A) (all S if num_elites is None);
      4. weights w = softmax(-(c - min c) / temperature) over them -> (E, M);
      5. mean <- momentum * mean + (1 - momentum) * sum w * elite,
         std  <- momentum * std  + (1 - momentum) * sqrt(sum w * (elite - new elite mean)^2),
         then std >= min_std.
    temperature is in cost units: costs `temperature` above the best get weight 1/e of it.
    Returns the best sequence seen (`actions`, `cost`) and the final `mean`, `std`.
    """
    std, low, high = _check_gaussian(
        mean, std, low, high, num_samples, num_elites, iterations, momentum, min_std
    )
    require(temperature > 0.0, f"temperature must be > 0, got {temperature}.")
    gens = _per_env_generators(generator, mean.shape[0])
    num_elites = num_samples if num_elites is None else num_elites
    mean = torch.clamp(mean, low, high)
    best_actions, best_cost = mean.clone(), mean.new_full((mean.shape[0],), math.inf)
    for _ in range(iterations):
        # 1-2. sample and score
        samples = _sample_gaussian(mean, std, low, high, num_samples, gens)  # (E, S, H, A)
        costs = _evaluate(cost_fn, samples)  # (E, S)
        best_actions, best_cost = _update_best(best_actions, best_cost, samples, costs)
        # 3-4. elites and their exponential weights (the min cost has weight exp(0) = 1 before
        # normalising, so an all-inf row cannot occur unless every cost is inf)
        elites, elite_cost = _take_elites(samples, costs, num_elites)  # (E, M, H, A), (E, M)
        weights = torch.softmax(-(elite_cost - elite_cost[:, :1]) / temperature, dim=1)
        weights = weights[:, :, None, None]  # (E, M, 1, 1)
        # 5. weighted refit
        elite_mean = (weights * elites).sum(dim=1)  # (E, H, A)
        elite_std = (weights * (elites - elite_mean[:, None]).square()).sum(dim=1).sqrt()
        mean = momentum * mean + (1.0 - momentum) * elite_mean
        std = (momentum * std + (1.0 - momentum) * elite_std).clamp_min(min_std)
    return PlanResult(best_actions, best_cost, iterations, mean=mean, std=std)


# ----------------------------------------------------------------------------------------------
# discrete planner


def _nvec_tensor(nvec: Sequence[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    nvec = torch.as_tensor(np.asarray(nvec, dtype=np.int64).reshape(-1), device=device)
    require(nvec.numel() >= 1, "nvec must list at least one sub-action.")
    require(bool((nvec >= 1).all()), f"every entry of nvec must be >= 1, got {nvec.tolist()}.")
    return nvec


def _valid_mask(nvec: torch.Tensor, num_choices: int) -> torch.Tensor:
    """(K, N) bool: entry n of sub-action k is a real choice (n < nvec[k])."""
    return torch.arange(num_choices, device=nvec.device)[None, :] < nvec[:, None]


def uniform_probs(
    nvec: Sequence[int] | torch.Tensor,
    num_envs: int,
    horizon: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform categorical distributions (E, H, K, N), N = max(nvec), padded entries 0."""
    nvec_t = _nvec_tensor(nvec, torch.device(device) if device is not None else torch.device("cpu"))
    valid = _valid_mask(nvec_t, int(nvec_t.max()))  # (K, N)
    probs = valid.to(dtype) / nvec_t[:, None].to(dtype)
    return probs.expand(num_envs, horizon, -1, -1).clone()


def categorical_cem(
    cost_fn: CostFn,
    probs: torch.Tensor,
    nvec: Sequence[int] | torch.Tensor,
    *,
    num_samples: int = 64,
    num_elites: int = 8,
    iterations: int = 3,
    momentum: float = 0.1,
    min_prob: float = 0.01,
    generator: Generators = None,
) -> PlanResult:
    """Cross-entropy method over discrete action sequences of K sub-actions (Discrete(n): nvec=[n]).

    probs: (E, H, K, N) warm-start categorical distributions, N >= max(nvec), entries n >= nvec[k]
    ignored (treated as 0); nvec: (K,) choices per sub-action. Per iteration:
      1. sample S - 1 index sequences from probs, add the argmax sequence -> (E, S, H, K) long;
      2. costs = cost_fn(samples) -> (E, S); remember the lowest-cost sequence seen so far;
      3. take the num_elites lowest-cost samples (E, M, H, K);
      4. probs <- momentum * probs + (1 - momentum) * elite frequencies (E, H, K, N), then every
         valid entry raised to at least min_prob and each distribution renormalised.
    Returns the best sequence seen (`actions` (E, H, K) long, `cost`) and the final `probs`.
    """
    require(probs.dim() == 4, f"probs must have shape (E, H, K, N), got {tuple(probs.shape)}.")
    require(probs.is_floating_point(), f"probs must be a float tensor, got {probs.dtype}.")
    num_envs, horizon, num_sub, num_choices = probs.shape
    nvec_t = _nvec_tensor(nvec, probs.device)
    require(
        nvec_t.numel() == num_sub and int(nvec_t.max()) <= num_choices,
        f"probs of shape {tuple(probs.shape)} do not fit nvec={nvec_t.tolist()}; "
        "need K = len(nvec) and N >= max(nvec).",
    )
    require(
        1 <= num_elites <= num_samples,
        f"num_elites must be between 1 and num_samples={num_samples}, got {num_elites}.",
    )
    require(iterations >= 1, f"iterations must be >= 1, got {iterations}.")
    require(0.0 <= momentum < 1.0, f"momentum must be in [0, 1), got {momentum}.")
    require(0.0 <= min_prob <= 1.0, f"min_prob must be in [0, 1], got {min_prob}.")
    valid = _valid_mask(nvec_t, num_choices)  # (K, N)
    probs = torch.where(valid, probs, 0.0)
    require(bool((probs >= 0).all()), "probs must be non-negative.")
    require(bool((probs.sum(-1) > 0).all()), "every distribution in probs needs positive mass.")
    probs = probs / probs.sum(-1, keepdim=True)

    gens = _per_env_generators(generator, num_envs)
    best_actions = probs.argmax(-1)  # (E, H, K)
    best_cost = probs.new_full((num_envs,), math.inf)
    for _ in range(iterations):
        # 1. sample indices; sample 0 is the argmax sequence
        drawn = _sample_categorical(probs, num_samples - 1, gens)  # (E, S-1, H, K)
        samples = torch.cat([probs.argmax(-1)[:, None], drawn], dim=1)  # (E, S, H, K)
        # 2. score
        costs = _evaluate(cost_fn, samples)  # (E, S)
        best_actions, best_cost = _update_best(best_actions, best_cost, samples, costs)
        # 3-4. refit to elite frequencies
        elites, _ = _take_elites(samples, costs, num_elites)  # (E, M, H, K)
        freq = F.one_hot(elites, num_choices).to(probs.dtype).mean(dim=1)  # (E, H, K, N)
        probs = momentum * probs + (1.0 - momentum) * freq
        probs = torch.where(valid, probs.clamp_min(min_prob), 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return PlanResult(best_actions, best_cost, iterations, probs=probs)


def _sample_categorical(
    probs: torch.Tensor, num: int, gens: list[torch.Generator] | None
) -> torch.Tensor:
    """num index sequences per env from probs (E, H, K, N) -> (E, num, H, K) long.

    Env e samples only from gens[e] (one call per env), so its draws do not depend on E.
    """
    num_envs, horizon, num_sub, _ = probs.shape
    if num == 0:
        return probs.new_zeros((num_envs, 0, horizon, num_sub), dtype=torch.long)
    rows = rearrange(probs, "e h k n -> e (h k) n")
    if gens is None:
        draws = [torch.multinomial(rows[e], num, replacement=True) for e in range(num_envs)]
    else:
        draws = []
        for e in range(num_envs):
            g = gens[e] if len(gens) > 1 else gens[0]
            idx = torch.multinomial(rows[e].to(g.device), num, replacement=True, generator=g)
            draws.append(idx.to(probs.device))
    draws = torch.stack(draws)  # (E, H*K, num)
    return rearrange(draws, "e (h k) s -> e s h k", h=horizon, k=num_sub)


# ----------------------------------------------------------------------------------------------
# warm start


def shift_warm_start(x: torch.Tensor, fill: torch.Tensor | float) -> torch.Tensor:
    """Shift a plan one step earlier along H and fill the freed last step.

    x: (E, H, ...) previous mean / std / probs. fill: a scalar, a tensor broadcastable to one step
    (E, ...) such as (A,) or (E, A), or a tensor shaped like x (its last step is used, e.g. the
    initial mean). Returns (E, H, ...): out[:, :-1] = x[:, 1:], out[:, -1] = fill.
    """
    require(x.dim() >= 2, f"x must have shape (E, H, ...), got {tuple(x.shape)}.")
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    if fill.shape == x.shape:
        fill = fill[:, -1]
    last = fill.expand(x.shape[:1] + x.shape[2:])  # (E, ...)
    return torch.cat([x[:, 1:], last[:, None]], dim=1)


def gaussian_init(
    low: torch.Tensor, high: torch.Tensor, num_envs: int, horizon: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial (mean, std), each (E, H, A): the middle of the box and half its width."""
    low, high = torch.as_tensor(low), torch.as_tensor(high)
    mean = ((low + high) / 2).expand(num_envs, horizon, -1).clone()
    std = ((high - low) / 2).expand(num_envs, horizon, -1).clone()
    return mean, std


# ----------------------------------------------------------------------------------------------
# cost functions


def goal_distance(
    pred: torch.Tensor,
    goal: torch.Tensor,
    p: float = 1,
    final_only: bool = True,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distance of predicted latents to a goal latent, (E, S).

    pred: (E, S, H, *D) predicted latents; goal: (E, *D). Per step the mean over latent dims of
    |pred - goal|^p (p=1: L1 as in V-JEPA 2-AC; p=2: mean squared error), each dim multiplied by
    `weights` (*D) when given, then the last step only (final_only) or the sum over the H steps.
    """
    require(p > 0, f"p must be > 0, got {p}.")
    require(
        pred.dim() >= 3 and goal.dim() == pred.dim() - 2 and goal.shape[0] == pred.shape[0],
        f"pred (E, S, H, ...) {tuple(pred.shape)} and goal (E, ...) {tuple(goal.shape)} do not match.",
    )
    goal = goal[:, None, None]  # (E, 1, 1, *D)
    per_dim = (pred - goal).abs().pow(p)
    if weights is not None:
        per_dim = per_dim * weights.to(per_dim.device)
    per_step = per_dim.flatten(3).mean(dim=-1)  # (E, S, H)
    return per_step[..., -1] if final_only else per_step.sum(dim=-1)


def reward_cost(
    rewards: torch.Tensor,
    terminations: torch.Tensor | None = None,
    discount: float = 1.0,
    termination_penalty: float = 0.0,
) -> torch.Tensor:
    """Negative expected discounted return under predicted terminations, (E, S).

    rewards: (E, S, H) reward of the transition at step t; terminations: (E, S, H) probability
    that the transition at step t ends the episode (None: never). The reward at step t counts if
    no earlier step terminated: alive_t = prod_{j<t} (1 - p_j) (the terminating step's own reward
    counts, as in gymnasium). cost = -sum_t discount^t * alive_t * r_t
                                     + termination_penalty * (1 - prod_{t<H} (1 - p_t)).
    """
    require(rewards.dim() == 3, f"rewards must have shape (E, S, H), got {tuple(rewards.shape)}.")
    require(0.0 <= discount <= 1.0, f"discount must be in [0, 1], got {discount}.")
    horizon = rewards.shape[-1]
    discounts = discount ** torch.arange(horizon, device=rewards.device, dtype=rewards.dtype)
    if terminations is None:
        return -(rewards * discounts).sum(dim=-1)
    require(
        terminations.shape == rewards.shape,
        f"terminations {tuple(terminations.shape)} must have the shape of rewards {tuple(rewards.shape)}.",
    )
    survive = torch.cumprod(1.0 - terminations, dim=-1)  # (E, S, H): alive after step t
    alive = torch.cat([torch.ones_like(survive[..., :1]), survive[..., :-1]], dim=-1)  # before t
    expected_return = (rewards * alive * discounts).sum(dim=-1)
    return -expected_return + termination_penalty * (1.0 - survive[..., -1])


# ----------------------------------------------------------------------------------------------
# gymnasium action spaces


def _env_name(env_id: str | None) -> str:
    return env_id if env_id else "the environment"


def action_space_kind(
    space: gym.Space, env_id: str | None = None
) -> Literal["continuous", "discrete"]:
    """The kind of planner a space needs: "continuous" for a 1-D float Box with finite bounds,
    "discrete" for Discrete, the spaces a world model embeds; UserError for any other."""
    name = _env_name(env_id)
    if isinstance(space, gym.spaces.Box):
        require(
            np.issubdtype(space.dtype, np.floating) and len(space.shape) == 1,
            f"{name} has action space {space}; the planners need a 1-D float Box (flatten it with a wrapper).",
        )
        require(
            bool(space.is_bounded("both")),
            f"{name} has an unbounded action space {space}; wrap it with "
            "gymnasium.wrappers.ClipAction or RescaleAction so every action has finite bounds.",
        )
        return "continuous"
    if isinstance(space, gym.spaces.Discrete):
        return "discrete"
    raise UserError(
        f"{name} has action space {space}, which the world model cannot embed; use an env with a "
        "Box or Discrete action space (a wrapper can map a MultiDiscrete one to a Discrete)."
    )


def action_space_nvec(space: gym.Space, env_id: str | None = None) -> list[int]:
    """The categorical planner's choices per step for a Discrete(n) space: [n]. Planner indices
    are 0-based: the env action is `index + space.start`."""
    require(
        action_space_kind(space, env_id) == "discrete",
        f"{_env_name(env_id)} has a continuous action space {space}; it has no nvec.",
    )
    return [int(space.n)]


def check_planner_fits(planner_name: str, space: gym.Space, env_id: str | None = None) -> None:
    """Raise UserError, before any work starts, if `planner_name` cannot plan in `space`."""
    kind = action_space_kind(space, env_id)
    name = _env_name(env_id)
    if planner_name in CONTINUOUS_PLANNERS:
        require(
            kind == "continuous",
            f"planner '{planner_name}' needs a continuous (Box) action space but {name} has "
            f"{space}; use --planner {DISCRETE_PLANNERS[0]}",
        )
    elif planner_name in DISCRETE_PLANNERS:
        require(
            kind == "discrete",
            f"planner '{planner_name}' needs a discrete (Discrete) action space "
            f"but {name} has {space}; use --planner cem or --planner mppi",
        )
    else:
        choices = ", ".join(CONTINUOUS_PLANNERS + DISCRETE_PLANNERS)
        raise UserError(f"unknown planner '{planner_name}'; choose one of {choices}.")


# ----------------------------------------------------------------------------------------------
# planner objects: one interface over the functions above

Distribution = dict[str, torch.Tensor]
"""A planner's sampling distribution, each tensor (E, H, ...): {"mean", "std"} or {"probs"}."""


class Planner:
    """A planner bound to its settings and action space: `init` -> `plan` -> `shift`.

        dist = planner.init(num_envs, horizon)               # the initial distribution
        result = planner.plan(cost_fn, dist, generator)      # PlanResult; execute actions[:, 0]
        dist = planner.shift(result.distribution())          # receding-horizon warm start

    Subclasses set `name`, `kind` ("continuous" / "discrete") and implement `init` and `plan`.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["continuous", "discrete"]]

    @classmethod
    def settings_from(cls, cfg: PlannerConfig) -> dict:
        """The planner function's keyword arguments from a PlannerConfig."""
        return dict(
            num_samples=cfg.samples,
            num_elites=cfg.elites,
            iterations=cfg.iterations,
            momentum=cfg.momentum,
        )

    def init(self, num_envs: int, horizon: int) -> Distribution:
        """The initial (widest) distribution, each tensor (E, H, ...)."""
        raise NotImplementedError

    def plan(self, cost_fn: CostFn, dist: Distribution, generator: Generators = None) -> PlanResult:
        """Plan from the warm start `dist` (see the functions for cost_fn and generator)."""
        raise NotImplementedError

    def shift(self, dist: Distribution) -> Distribution:
        """One step earlier along H; the freed last step comes from `init`."""
        num_envs, horizon = next(iter(dist.values())).shape[:2]
        fresh = self.init(num_envs, horizon)
        return {k: shift_warm_start(v, fresh[k]) for k, v in dist.items()}

    def restart(self, dist: Distribution, done: torch.Tensor) -> Distribution:
        """Envs with done (E,) bool go back to `init`; the others keep their warm start."""
        num_envs, horizon = next(iter(dist.values())).shape[:2]
        fresh = self.init(num_envs, horizon)
        return {
            k: torch.where(done.view(-1, *[1] * (v.dim() - 1)), fresh[k], v)
            for k, v in dist.items()
        }


class _GaussianPlanner(Planner):
    """Shared by `cem` and `mppi`: a Gaussian (mean, std) (E, H, A) over actions in [low, high];
    subclasses name the search function (`search`)."""

    kind = "continuous"
    search: ClassVar[Callable[..., PlanResult]]

    def __init__(
        self,
        low: torch.Tensor,
        high: torch.Tensor,
        device: torch.device | str | None = None,
        **settings,
    ):
        self.low = torch.as_tensor(low, dtype=torch.float32, device=device)
        self.high = torch.as_tensor(high, dtype=torch.float32, device=device)
        self.settings = settings

    def init(self, num_envs: int, horizon: int) -> Distribution:
        mean, std = gaussian_init(self.low, self.high, num_envs, horizon)
        return {"mean": mean, "std": std}

    def plan(self, cost_fn: CostFn, dist: Distribution, generator: Generators = None) -> PlanResult:
        return self.search(
            cost_fn,
            dist["mean"],
            dist["std"],
            self.low,
            self.high,
            generator=generator,
            **self.settings,
        )


class CEMPlanner(_GaussianPlanner):
    """`cem` with fixed settings (its keyword arguments)."""

    name = "cem"
    search = staticmethod(cem)


class MPPIPlanner(_GaussianPlanner):
    """`mppi` with fixed settings (its keyword arguments)."""

    name = "mppi"
    search = staticmethod(mppi)

    @classmethod
    def settings_from(cls, cfg: PlannerConfig) -> dict:
        return {**super().settings_from(cfg), "temperature": cfg.temperature}


class CategoricalCEMPlanner(Planner):
    """`categorical_cem` with fixed settings: distributions probs (E, H, K, N) over nvec (K,)."""

    name = "categorical_cem"
    kind = "discrete"

    def __init__(self, nvec: Sequence[int], device: torch.device | str | None = None, **settings):
        self.nvec, self.device, self.settings = list(nvec), device, settings

    def init(self, num_envs: int, horizon: int) -> Distribution:
        return {"probs": uniform_probs(self.nvec, num_envs, horizon, device=self.device)}

    def plan(self, cost_fn: CostFn, dist: Distribution, generator: Generators = None) -> PlanResult:
        return categorical_cem(
            cost_fn, dist["probs"], self.nvec, generator=generator, **self.settings
        )


PLANNERS: dict[str, type[Planner]] = {
    "cem": CEMPlanner,
    "mppi": MPPIPlanner,
    "categorical_cem": CategoricalCEMPlanner,
}


def make_planner(
    name: str,
    cfg: PlannerConfig,
    space: gym.Space,
    env_id: str | None = None,
    device: torch.device | str | None = None,
) -> Planner:
    """The planner `name` ("auto": categorical_cem for discrete spaces, cem otherwise) for `space`,
    with the settings `settings_from(cfg)` gives (samples, elites, iterations, momentum; mppi also
    temperature).

    UserError (one line) for an unknown name or a planner that cannot plan in `space`.
    """
    kind = action_space_kind(space, env_id)
    if name == "auto":
        name = "categorical_cem" if kind == "discrete" else "cem"
    if name not in PLANNERS:
        raise UserError(f"unknown planner '{name}'; choose one of {', '.join(PLANNERS)}.")
    check_planner_fits(name, space, env_id)
    planner = PLANNERS[name]
    settings = planner.settings_from(cfg)
    if planner.kind == "discrete":
        return planner(action_space_nvec(space, env_id), device=device, **settings)
    return planner(space.low, space.high, device=device, **settings)
