"""Benchmark planning: the `vjepa-bench-plan` command, run from a checkout without installing.

    python scripts/bench_plan.py --model runs/plan-CartPole-v1-pixels/model

The body is vjepa_agent/cli/bench_plan.py; `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.cli.bench_plan import main  # noqa: E402

if __name__ == "__main__":
    main()
