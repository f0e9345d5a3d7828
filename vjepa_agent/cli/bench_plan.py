"""Benchmark planning: ms per decision of plan.py's agent on a trained world model, quiet and
beside one busy process, with the time split (encoder, model calls, planner overhead), and the
library's model call (rollout and objective) against the plain one on the same inputs.

    vjepa-bench-plan --model runs/plan-CartPole-v1-pixels/model
    vjepa-bench-plan --model runs/plan-CartPole-v1-state/model --obs state

The model is any plan.py or train_world_model.py output folder; the planner is plan.py's preset
for the env. Writes summary.json into --out.
"""

import argparse
import json
from pathlib import Path

from vjepa_agent.errors import cli_entry


@cli_entry
def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a trained world-model folder")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--obs", choices=["pixels", "state"], default="pixels")
    parser.add_argument("--episodes", type=int, default=2, help="timed episodes per condition")
    parser.add_argument("--max-steps", type=int, default=200, help="decisions per episode at most")
    parser.add_argument("--calls", type=int, default=200, help="recorded rollouts replayed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-plan")
    args = parser.parse_args()

    from vjepa_agent.bench import bench_plan  # torch loads here, after the flags are read
    from vjepa_agent.config import PlanConfig

    cfg = PlanConfig(
        env=args.env, obs=args.obs, model=Path(args.model), seed=args.seed, out=args.out
    )
    summary = bench_plan(cfg, args.episodes, args.max_steps, args.calls)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    q, c = summary["quiet"], summary["contended"]
    print(
        f"ms per decision: {q['ms_per_action']:.2f} quiet, {c['ms_per_action']:.2f} beside a busy "
        f"process; model call {q['model_call_ms_library']:.2f} ms (plain "
        f"{q['model_call_ms_plain']:.2f}, {q['model_call_speedup']:.2f}x) -> {out / 'summary.json'}"
    )


if __name__ == "__main__":
    main()
