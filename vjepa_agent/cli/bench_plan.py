"""Benchmark planning: ms per decision of plan.py's agent on a trained world model, quiet and
beside one busy process, with the time split (encoder, model calls, planner overhead), and the
library's model call (rollout and objective) against the plain one on the same inputs.

    vjepa-bench-plan --model runs/plan-CartPole-v1-pixels/model
    vjepa-bench-plan --model runs/plan-CartPole-v1-state/model --obs state

The flags are plan.py's (the planner is the env's preset unless flags say otherwise); here
--episodes are the timed episodes of each condition (default 2) and --max-episode-steps caps
them (default 200). Writes summary.json into --out (default runs/bench-plan).
"""

import json
import sys
from pathlib import Path

from vjepa_agent.cli import parse
from vjepa_agent.config import PlanConfig
from vjepa_agent.errors import UserError, cli_entry

CALLS = 200  # recorded planner calls replayed through both model-call paths


@cli_entry
def main():
    # the benchmark's defaults first: the command line overrides them
    defaults = ["--episodes", "2", "--max-episode-steps", "200", "--out", "runs/bench-plan"]
    cfg = parse(PlanConfig, __doc__, defaults + sys.argv[1:])
    if cfg.model is None:
        raise UserError("vjepa-bench-plan needs --model: a trained world-model folder")
    from vjepa_agent.bench import bench_plan  # torch loads here, after the flags are read

    summary = bench_plan(cfg, cfg.episodes, cfg.max_episode_steps, CALLS)
    out = Path(cfg.out)
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
