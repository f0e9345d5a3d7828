"""How much of the true state a pixel world model's latents hold (a diagnostic: it reads the
simulator's state, which training and planning never see).

    vjepa-plan --env CartPole-v1 --obs state --out runs/cp-state      # a state model
    vjepa-diagnose --model runs/plan-CartPole-v1-pixels/model \\
        --data runs/plan-CartPole-v1-pixels/data --state-model runs/cp-state/model --episodes 10

Writes summary.json into --out: the held-out RMS error per state dimension of an MLP probe on
encoded and on imagined latents (1 / 5 / 10 steps), and with --state-model the returns of the
state model's planner acting on probe-read states beside true states plus noise of that error,
with the probe-read errors by distance of state[0] from 0 (CartPole: the cart from the centre).
"""

import json

from vjepa_agent.cli import parse
from vjepa_agent.config import DiagnoseConfig
from vjepa_agent.errors import cli_entry


@cli_entry
def main():
    cfg = parse(DiagnoseConfig, __doc__)
    from vjepa_agent.latent_diagnostics import (
        run_diagnose,  # torch loads here, after the flags are read
    )

    print(json.dumps(run_diagnose(cfg), indent=1))


if __name__ == "__main__":
    main()
