"""Train an action-conditioned latent world model on a rollout store.

    python scripts/train_world_model.py --data data/cartpole --out runs/cartpole-wm
    accelerate launch scripts/train_world_model.py --data data/cartpole --out runs/cartpole-wm

Writes model.safetensors + config.json (load with `WorldModel.from_pretrained(out)`), metrics.jsonl
and summary.json (held-out latent error at 1 and 10 steps beside copy-last, termination ROC-AUC).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.config import WorldModelConfig, load_config  # noqa: E402
from vjepa_agent.errors import cli_entry  # noqa: E402
from vjepa_agent.train.world_model import train_world_model  # noqa: E402


@cli_entry
def main():
    cfg = load_config(WorldModelConfig, description=__doc__)
    _, summary = train_world_model(cfg)
    for key in (
        "latent_error_1",
        "copy_last_error_1",
        "latent_error_10",
        "copy_last_error_10",
        "termination_auc",
        "failure_auc_10_steps",
    ):
        if key in summary:
            print(f"{key:>20}: {summary[key]:.4f}")
    print(cfg.out / "summary.json")


if __name__ == "__main__":
    main()
