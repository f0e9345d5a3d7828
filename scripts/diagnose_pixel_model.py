"""What a pixel world model's latents hold of the true state: the `vjepa-diagnose` command, run from a checkout without installing.

    python scripts/diagnose_pixel_model.py --model runs/plan-CartPole-v1-pixels/model

The body is vjepa_agent/cli/diagnose_pixel_model.py; `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.cli.diagnose_pixel_model import main  # noqa: E402

if __name__ == "__main__":
    main()
