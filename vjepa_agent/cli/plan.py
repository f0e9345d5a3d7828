"""Model-predictive control in latent space.

    vjepa-plan --env CartPole-v1                    # pixels: collect, train, plan, report
    vjepa-plan --env CartPole-v1 --obs state
    vjepa-plan --env CartPole-v1 --model runs/cartpole-wm --episodes 20 --seed 7
    vjepa-plan --env vjepa_agent/PointGoal-v0 --goal

Writes summary.json, an mp4 of the first episode and a plot into --out; prints summary.json last.
"""

import os

from vjepa_agent.cli import parse
from vjepa_agent.config import PlanConfig
from vjepa_agent.errors import cli_entry, require_extra


@cli_entry
def main():
    cfg = parse(PlanConfig, __doc__)
    # run_plan checks this too (for library callers); here it comes before torch loads
    require_extra("matplotlib", "viz", "the plan plots its returns (plan.png)")
    from vjepa_agent.plan_run import run_plan  # torch loads here, after the flags are read

    summary = run_plan(cfg)
    for key in ("mean_return", "min_return", "env_steps_trained", "train_seconds", "ms_per_action"):
        print(f"{key:>18}: {summary[key]:.4g}")
    print(os.path.join(os.path.dirname(summary["plot"]), "summary.json"))


if __name__ == "__main__":
    main()
