"""Collect environment rollouts (random policy) into a memory-mapped rollout store.

vjepa-collect --env CartPole-v1 --steps 10000 --out data/cartpole
vjepa-collect --env Pendulum-v1 --obs state --steps 5000 --out data/pendulum
vjepa-collect --env CartPole-v1 --exploring-starts --out data/cartpole-spread
"""

from vjepa_agent import envs
from vjepa_agent.cli import parse
from vjepa_agent.config import CollectConfig
from vjepa_agent.errors import cli_entry, require


@cli_entry
def main():
    cfg = parse(CollectConfig, __doc__)
    require(cfg.steps >= 1, f"steps must be >= 1, got {cfg.steps}")
    ranges = (
        envs.starts.default_start_ranges(cfg.env, cfg.start_spread)
        if cfg.exploring_starts
        else None
    )
    envs.collect_rollouts(  # torch loads here, after the flags are read
        cfg.env,
        cfg.steps,
        out=cfg.out,
        obs=cfg.obs,
        num_envs=cfg.num_envs,
        seed=cfg.seed,
        size=cfg.size,
        frame_stack=cfg.frame_stack,
        grayscale=cfg.grayscale,
        video_dir=cfg.video_dir,
        start_ranges=ranges,
        sticky_actions=cfg.sticky_actions,
    )
    print(cfg.out)


if __name__ == "__main__":
    main()
