"""Model-predictive control in latent space.

    python scripts/plan.py --env CartPole-v1                    # pixels: collect, train, plan, report
    python scripts/plan.py --env CartPole-v1 --obs state
    python scripts/plan.py --env CartPole-v1 --model runs/cartpole-wm --episodes 20 --seed 7
    python scripts/plan.py --env vjepa_agent/PointGoal-v0 --goal

Writes summary.json, an mp4 of the first episode and a plot into --out; prints summary.json last.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.config import PlanConfig, load_config  # noqa: E402
from vjepa_agent.control import run_plan  # noqa: E402
from vjepa_agent.errors import cli_entry  # noqa: E402


@cli_entry
def main():
    cfg = load_config(PlanConfig, description=__doc__)
    summary = run_plan(cfg)
    for key in ("mean_return", "min_return", "env_steps_trained", "train_seconds", "ms_per_action"):
        print(f"{key:>18}: {summary[key]:.4g}")
    print(os.path.join(os.path.dirname(summary["plot"]), "summary.json"))


if __name__ == "__main__":
    main()
