"""Frozen-encoder probe: how much of the label a pretrained encoder's tokens carry.

    python scripts/eval_probe.py --encoder runs/l16 --data /videos/labelled.csv --probe attentive --out runs/probe
    python scripts/eval_probe.py --encoder runs/pretrain/export --probe linear --which student
    python scripts/eval_probe.py --encoder runs/pretrain --synthetic-noise 0.5     # labelled synthetic videos

--encoder takes an export folder or a training run folder; --data a folder with one sub-folder per
class or a 'path label' CSV (omit it for the labelled synthetic videos). Features are cached once
from the frozen encoder; the probe trains on a stratified train split and is scored on the rest.
Writes summary.json (top1, per_class, chance, num_train, num_val, probe, which) into --out.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.config import load_config  # noqa: E402
from vjepa_agent.errors import cli_entry  # noqa: E402
from vjepa_agent.probe import ProbeConfig, run_eval_probe  # noqa: E402


@cli_entry
def main():
    cfg = load_config(ProbeConfig, description=__doc__)
    run_eval_probe(cfg)


if __name__ == "__main__":
    main()
