"""Collect environment rollouts (random policy) into a memory-mapped rollout store.

python scripts/collect_rollouts.py --env CartPole-v1 --steps 10000 --out data/cartpole
python scripts/collect_rollouts.py --env Pendulum-v1 --obs state --steps 5000 --out data/pendulum
python scripts/collect_rollouts.py --env CartPole-v1 --exploring-starts --out data/cartpole-spread
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import envs  # noqa: E402
from vjepa_agent.config import CollectConfig, load_config  # noqa: E402
from vjepa_agent.errors import cli_entry, require  # noqa: E402


@cli_entry
def main():
    cfg = load_config(CollectConfig, description=__doc__)
    require(cfg.steps >= 1, f"steps must be >= 1, got {cfg.steps}")
    ranges = envs.starts.default_start_ranges(cfg.env) if cfg.exploring_starts else None
    envs.collect_rollouts(
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
    )
    print(cfg.out)


if __name__ == "__main__":
    main()
