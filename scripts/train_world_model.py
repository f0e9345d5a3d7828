"""Train an action-conditioned latent world model: the `vjepa-train-world-model` command, run from a checkout without installing.

    accelerate launch scripts/train_world_model.py --data data/cartpole --out runs/cartpole-wm

The body is vjepa_agent/cli/train_world_model.py; `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.cli.train_world_model import main  # noqa: E402

if __name__ == "__main__":
    main()
