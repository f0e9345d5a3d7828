"""Model-predictive control in latent space: the `vjepa-plan` command, run from a checkout without installing.

    python scripts/plan.py --env CartPole-v1

The body is vjepa_agent/cli/plan.py; `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.cli.plan import main  # noqa: E402

if __name__ == "__main__":
    main()
