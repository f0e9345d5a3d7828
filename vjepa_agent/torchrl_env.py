"""A TorchRL env that steps inside a `WorldModel` (needs the `[torchrl]` extra).

    env = wm.as_torchrl_env(start=wm.encode(observations), batch_size=(E,))
    td = env.rollout(H, policy)   # td["next", "latent" | "reward" | "terminated" | "done"], (E, H, ...)

The world-model module reads the root keys "latent" and "action" and writes the root keys TorchRL's
`ModelBasedEnvBase._step` selects: "latent" (the next latent), "reward" (..., 1), "terminated" and
"done" (..., 1) bool; `EnvBase.step` moves them under "next". Truncation after a number of steps
is TorchRL's `StepCounter` transform.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import ModelBasedEnvBase

from vjepa_agent.errors import require
from vjepa_agent.world_model import WorldModel


class ImagineStep(nn.Module):
    """(latent, action) -> (next latent, reward (..., 1), terminated (..., 1), done (..., 1))."""

    def __init__(self, wm: WorldModel, termination_threshold: float):
        super().__init__()
        self.wm, self.termination_threshold = wm, termination_threshold

    def forward(self, latent: torch.Tensor, action: torch.Tensor):
        z = self.wm.predict(latent, action)  # (..., *latent)
        reward = self.wm.reward(z)[..., None]
        terminated = (self.wm.termination(z) > self.termination_threshold)[..., None]
        return z, reward, terminated, terminated.clone()


def world_model_module(wm: WorldModel, termination_threshold: float = 0.5) -> TensorDictModule:
    """The TensorDictModule a TorchRL `ModelBasedEnvBase` steps with: root keys in and out."""
    return TensorDictModule(
        ImagineStep(wm, termination_threshold),
        in_keys=["latent", "action"],
        out_keys=["latent", "reward", "terminated", "done"],
    )


class WorldModelEnv(ModelBasedEnvBase):
    """Imagined env with batch size `batch_size` (E envs, or () for one).

    `reset()` draws start latents uniformly from `start` (K, *latent) (seeded by `set_seed`);
    `reset(td, set_state=True)` starts from `td["latent"]` instead. Steps are one-step
    predictions, so the model must be Markov (trained with context 1): then `rollout` equals
    `WorldModel.rollout` for the same actions. Gradients flow unless the caller uses `no_grad`.
    """

    _supports_set_state = True

    def __init__(
        self,
        wm: WorldModel,
        start: torch.Tensor | None = None,
        batch_size: tuple[int, ...] | torch.Size = (),
        termination_threshold: float = 0.5,
    ):
        require(
            wm.cfg.context == 1,
            f"a TorchRL env steps one latent at a time, but this world model was trained with "
            f"context {wm.cfg.context}; use a model trained with context 1",
        )
        device = next(wm.parameters()).device
        latent_shape = wm.latent_shape
        if start is not None:
            start = torch.as_tensor(start, device=device)
            require(
                start.ndim == 1 + len(latent_shape)
                and tuple(start.shape[1:]) == latent_shape
                and len(start) > 0,
                f"start latents must have shape (K, {', '.join(map(str, latent_shape))}) for this "
                f"model, got {tuple(start.shape)}; pass wm.encode(observations)",
            )
        batch_size = torch.Size(batch_size)
        super().__init__(
            world_model_module(wm, termination_threshold), device=device, batch_size=batch_size
        )
        self.wm, self.start = wm, start
        self.latent_shape = latent_shape
        self.rng = torch.Generator()
        self.observation_spec = Composite(
            latent=Unbounded((*batch_size, *latent_shape), device=device),
            shape=batch_size,
            device=device,
        )
        self.action_spec = _action_spec(wm, batch_size, device)
        self.reward_spec = Unbounded((*batch_size, 1), device=device)
        flag = Categorical(2, (*batch_size, 1), dtype=torch.bool, device=device)
        self.done_spec = Composite(
            done=flag.clone(), terminated=flag.clone(), shape=batch_size, device=device
        )

    def _reset(
        self, tensordict: TensorDictBase | None = None, set_state: bool = False, **kwargs
    ) -> TensorDictBase:
        if set_state and tensordict is not None and "latent" in tensordict.keys():
            z = tensordict.get("latent").to(self.device)
        else:
            require(
                self.start is not None,
                "this imagined env has no start latents; pass start=wm.encode(observations) to "
                "as_torchrl_env, or reset(TensorDict(latent=...), set_state=True)",
            )
            idx = torch.randint(len(self.start), self.batch_size, generator=self.rng)
            z = self.start[idx.to(self.device)]  # (*batch, *latent)
        flag = torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        return TensorDict(
            {"latent": z, "done": flag, "terminated": flag.clone()},
            batch_size=self.batch_size,
            device=self.device,
        )

    def _set_seed(self, seed: int | None) -> None:
        if seed is not None:
            self.rng.manual_seed(seed)


def _action_spec(wm: WorldModel, batch_size: torch.Size, device: torch.device):
    """Actions as the real env takes them: Discrete indices (*batch,), Box values (*batch, A)."""
    space = wm.env["action_space"]
    if wm.action_kind == "discrete":
        require(
            int(space.get("start", 0)) == 0,
            "TorchRL's Categorical actions start at 0; this model's Discrete space starts at "
            f"{space['start']}",
        )
        return Categorical(wm.action_dim, batch_size, dtype=torch.int64, device=device)
    return Bounded(
        low=wm.action_low.expand(*batch_size, wm.action_dim),
        high=wm.action_high.expand(*batch_size, wm.action_dim),
        shape=(*batch_size, wm.action_dim),
        device=device,
    )
