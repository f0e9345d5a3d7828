"""Collect environment rollouts into a rollout store: the `vjepa-collect` command, run from a checkout without installing.

    python scripts/collect_rollouts.py --env CartPole-v1 --out data/cartpole

The body is vjepa_agent/cli/collect_rollouts.py; `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.cli.collect_rollouts import main  # noqa: E402

if __name__ == "__main__":
    main()
