"""Train an action-conditioned latent world model on a rollout store.

    vjepa-train-world-model --data data/cartpole --out runs/cartpole-wm
    accelerate launch -m vjepa_agent.cli.train_world_model --data data/cartpole --out runs/cartpole-wm

Writes model.safetensors + config.json (load with `WorldModel.from_pretrained(out)`), metrics.jsonl
(a line per log step, as the run goes), tensorboard/ (`--tracker`: tensorboard, wandb or none) and
summary.json (held-out latent error at 1 and 10 steps beside copy-last, termination ROC-AUC).
"""

from vjepa_agent.cli import parse
from vjepa_agent.config import WorldModelConfig
from vjepa_agent.errors import cli_entry


@cli_entry
def main():
    cfg = parse(WorldModelConfig, __doc__)
    from vjepa_agent.train.world_model import train_world_model  # torch loads here

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
