"""The MPC agent: observation in, encode, plan in latent space, act; warm-started replanning.

    agent = MPCAgent(wm, env.action_space, LatentObjective(goal=z_goal), PlannerConfig(samples=128))
    agent.reset(num_envs=1)
    action = agent.act(obs[None])[0]

The agent batches E environments (obs (E, ...)), owns the warm start, and times itself:
`stats()` splits wall time into encoding, model calls inside the cost (the predictor rollout and
heads) and the planner's own work.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from vjepa_agent import planning, seeding
from vjepa_agent.config import PlannerConfig
from vjepa_agent.errors import require
from vjepa_agent.world_model import WorldModel


@dataclass
class LatentObjective:
    """Cost of imagined trajectories: goal distance + negative expected return (+ termination penalty).

    cost = goal_weight * goal_distance(traj, goal, p, final_only)
           + reward_cost(reward_weight * predicted rewards, predicted terminations, discount,
                         termination_penalty)
           + termination_logit_weight * sum of termination logits
           + failure_logit_weight * sum of failure logits
    """

    goal: torch.Tensor | None = None
    """Goal latent (E, *latent) or (*latent); None = no goal term."""
    goal_weight: float = 1.0
    """Weight of the goal distance."""
    goal_dim_weights: torch.Tensor | None = None
    """Optional per-latent-dimension weights (*latent) of the goal distance (None = all equal)."""
    p: int = 2
    """1 = L1, 2 = squared L2 distance to the goal."""
    final_only: bool = False
    """Goal distance at the final step only (True) or summed over every step."""
    reward_weight: float = 1.0
    """Weight of the reward term (0 = goal only)."""
    termination_penalty: float = 0.0
    """Extra cost times the probability of terminating within the horizon."""
    discount: float = 0.99
    """Discount of predicted rewards."""
    termination_logit_weight: float = 0.0
    """Weight of the termination head's logits summed over the horizon: a smooth distance to
    failure (the probability is ~0 everywhere far from failure and gives the planner nothing to
    rank; measured in docs/experiments.md)."""

    failure_logit_weight: float = 0.0
    """Weight of the failure head's logits summed over the horizon, about minus the predicted steps
    left before failure under the data's policies (`WorldModel.failure`). It ranks states far
    from failure too, but on CartPole it did not beat the termination logits
    (docs/experiments.md)."""

    def __call__(
        self, wm: WorldModel, traj: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """traj (E, S, H, *latent) -> costs (E, S). With `index` (E, S, H), traj holds the
        distinct latents (N, *latent) of `WorldModel.rollout_nodes` instead: the heads run once
        per distinct latent and are gathered, the same costs as on traj[index]."""
        if index is None:
            index = torch.arange(math.prod(traj.shape[:3]), device=traj.device).reshape(
                traj.shape[:3]
            )
            traj = traj.reshape(-1, *traj.shape[3:])
        e = index.shape[0]
        cost = torch.zeros(index.shape[:2], device=traj.device)
        if self.goal is not None and self.goal_weight:
            # distances on what observations give (not the previous-action features of pixel latents)
            obs_traj = wm.observation_part(traj[index])
            goal = wm.observation_part(self.goal.to(traj.device)).expand(e, *obs_traj.shape[3:])
            dist = planning.goal_distance(
                obs_traj, goal, p=self.p, final_only=self.final_only, weights=self.goal_dim_weights
            )
            cost = cost + self.goal_weight * dist
        term_logits = None
        if self.termination_logit_weight or self.reward_weight or self.termination_penalty:
            term_logits = wm.termination_logits(traj)[index]  # (E, S, H)
        if self.termination_logit_weight:
            cost = cost + self.termination_logit_weight * term_logits.sum(-1)
        if self.failure_logit_weight:
            cost = cost + self.failure_logit_weight * wm.failure_logits(traj)[index].sum(-1)
        if self.reward_weight or self.termination_penalty:
            term = torch.sigmoid(term_logits)
            rew = wm.reward(traj)[index] if self.reward_weight else torch.zeros_like(term)
            cost = cost + planning.reward_cost(
                self.reward_weight * rew,
                term,
                discount=self.discount,
                termination_penalty=self.termination_penalty,
            )
        return cost


class MPCAgent:
    """Model-predictive control with a world model: plan every `replan_every` steps, execute, shift."""

    def __init__(
        self,
        wm: WorldModel,
        action_space,
        objective: LatentObjective,
        config: PlannerConfig | None = None,
        seed: int = 0,
        env_id: str | None = None,
    ):
        self.wm, self.objective, self.seed = wm, objective, seed
        self.explore = 0.0  # probability of a uniformly random action instead of the plan's
        self.cfg = config or PlannerConfig()
        self.device = next(wm.parameters()).device
        self.planner = planning.make_planner(
            self.cfg.planner, self.cfg, action_space, env_id, self.device
        )
        require(self.cfg.horizon >= 1, f"horizon must be >= 1, got {self.cfg.horizon}")
        require(
            1 <= self.cfg.replan_every <= self.cfg.horizon, "replan_every must be in [1, horizon]"
        )
        self.kind = self.planner.kind
        if self.kind == "discrete":
            self.nvec = planning.action_space_nvec(action_space, env_id)
            self.start = int(getattr(action_space, "start", 0))
        else:
            self.low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
            self.high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        self.mirror = self._mirror_permutation(self.cfg.mirror_actions)
        self.reset(1)

    def _mirror_permutation(self, mirror: list[int] | None) -> torch.Tensor | None:
        """cfg.mirror_actions as a (n,) long tensor of action indices (counted from 0), checked."""
        if mirror is None:
            return None
        require(
            self.kind == "discrete" and len(self.nvec) == 1 and self.wm.env["obs"] == "pixels",
            "mirror_actions needs pixel observations and one discrete action",
        )
        n, perm = int(self.nvec[0]), [int(a) - self.start for a in mirror]
        require(
            sorted(perm) == list(range(n)),
            f"mirror_actions must list each of the {n} actions once, got {list(mirror)}",
        )
        return torch.tensor(perm, device=self.device)

    # ---- state ----
    def reset(self, num_envs: int = 1) -> None:
        """Forget plans; new per-env generators (env e always draws from (seed, e))."""
        self.num_envs = num_envs
        self.generators = [seeding.generator("plan", self.seed, e) for e in range(num_envs)]
        # the planner's sampling distribution (E, H, ...), warm-started from plan to plan
        self.warm = self.planner.init(num_envs, self.cfg.horizon)
        self.plan: torch.Tensor | None = None
        self.plan_step = 0
        self.last_action: torch.Tensor | None = None  # (E[, A]) for latents that carry it
        self.has_last = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self.timing = {"encode": 0.0, "model": 0.0, "total": 0.0, "decisions": 0, "plans": 0}
        self.last_traj: torch.Tensor | None = None

    def episodes_ended(self, done: np.ndarray | torch.Tensor) -> None:
        """Envs whose episode ended (bool (E,)) start fresh: uniform / wide search distributions,
        no previous action; every env replans at the next step. `collect_rollouts` calls this."""
        done = torch.as_tensor(np.asarray(done), dtype=torch.bool, device=self.device)
        if not done.any():
            return
        self.warm = self.planner.restart(self.warm, done)
        self.has_last = self.has_last & ~done
        self.plan = None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """A collection policy: batched observations (E, ...) -> actions (E, ...) (see `act`)."""
        if obs.shape[0] != self.num_envs:
            self.reset(obs.shape[0])
        return self.act(obs)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self.reset(self.num_envs)

    # ---- acting ----
    @torch.no_grad()
    def act(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """obs (E, ...) batched observations -> (E,) discrete or (E, A) continuous env actions."""
        t0 = time.perf_counter()
        if self.plan is None or self.plan_step >= self.cfg.replan_every:
            obs = torch.as_tensor(np.asarray(obs), device=self.device)
            z = self.wm.encode(obs, self.last_action, self.has_last)  # (E, *latent)
            z_mirror = None
            if self.mirror is not None:  # the scene's mirror image, with the mirrored action
                last = self.last_action
                last = None if last is None else self.mirror[last - self.start] + self.start
                z_mirror = self.wm.encode(obs.flip(-1), last, self.has_last)
            self.timing["encode"] += time.perf_counter() - t0
            self._replan(z, z_mirror)
        action = self.plan[:, self.plan_step]
        if self.explore > 0:  # data collection: some uniformly random actions
            action = self._explore(action)
        self.last_action = action[:, 0] + self.start if self.kind == "discrete" else action
        self.has_last[:] = True
        self.plan_step += 1
        self.timing["total"] += time.perf_counter() - t0
        self.timing["decisions"] += 1
        if self.kind == "discrete":
            return (action[:, 0] + self.start).cpu().numpy()
        return action.cpu().numpy()

    def _explore(self, action: torch.Tensor) -> torch.Tensor:
        out = action.clone()
        for e, g in enumerate(self.generators):
            if torch.rand((), generator=g) < self.explore:
                if self.kind == "discrete":
                    n = torch.as_tensor(self.nvec)
                    out[e] = (torch.rand(len(n), generator=g) * n).long().to(out.device)
                else:
                    u = torch.rand(self.low.shape, generator=g).to(out.device)
                    out[e] = self.low + u * (self.high - self.low)
        return out

    def sequence_costs(
        self, z: torch.Tensor, actions: torch.Tensor, z_mirror: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Costs (E, S) of the planner's sequences actions (E, S, H[, A]) from latents z (E, ...);
        with z_mirror (the mirror images' latents), the mean of that and the mirrored sequences'
        cost from z_mirror (PlannerConfig.mirror_actions)."""
        t = time.perf_counter()

        def cost(start: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
            # the distinct imagined latents (shared action prefixes once) and each step's among them
            nodes, index = self.wm.rollout_nodes(start[:, None], acts)  # (N, *latent), (E, S, H)
            return self.objective(self.wm, nodes, index)

        # env actions; discrete plans count from 0, the env from `start`
        acts = actions[..., 0] + self.start if self.kind == "discrete" else actions
        out = cost(z, acts)
        if z_mirror is not None:
            out = 0.5 * (out + cost(z_mirror, self.mirror[actions[..., 0]] + self.start))
        self.timing["model"] += time.perf_counter() - t
        return out

    def _replan(self, z: torch.Tensor, z_mirror: torch.Tensor | None = None) -> None:
        def cost_fn(actions: torch.Tensor) -> torch.Tensor:
            return self.sequence_costs(z, actions, z_mirror)

        result = self.planner.plan(cost_fn, self.warm, self.generators)
        self.warm = self.planner.shift(result.distribution())  # receding-horizon warm start
        self.plan, self.plan_step = result.actions, 0
        self.timing["plans"] += 1

    def stats(self) -> dict[str, float]:
        """Per-decision timing: ms per action (encoder included), model vs planner overhead."""
        t, n = self.timing, max(1, self.timing["decisions"])
        overhead = t["total"] - t["encode"] - t["model"]
        return {
            "ms_per_action": 1000 * t["total"] / n,
            "ms_encode_per_plan": 1000 * t["encode"] / max(1, t["plans"]),
            "ms_model_per_plan": 1000 * t["model"] / max(1, t["plans"]),
            "ms_planner_overhead_per_plan": 1000 * overhead / max(1, t["plans"]),
            "planner_overhead_ratio": overhead / max(t["model"], 1e-9),
            "decisions": t["decisions"],
        }
