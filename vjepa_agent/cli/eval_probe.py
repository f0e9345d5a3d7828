"""Frozen-encoder probe: how much of the label a pretrained encoder's tokens carry.

    vjepa-probe --encoder runs/l16 --data /videos/labelled.csv --probe attentive --out runs/probe
    vjepa-probe --encoder runs/pretrain/export --probe linear --which student
    vjepa-probe --encoder runs/pretrain --synthetic-noise 0.5     # labelled synthetic videos

--encoder takes an export folder or a training run folder; --data a folder with one sub-folder per
class or a 'path label' CSV (omit it for the labelled synthetic videos). Features are cached once
from the frozen encoder; the probe trains on a stratified train split and is scored on the rest.
Writes summary.json (top1, per_class, chance, num_train, num_val, probe, which) into --out.
"""

from vjepa_agent.cli import parse
from vjepa_agent.config import ProbeConfig
from vjepa_agent.errors import cli_entry


@cli_entry
def main():
    cfg = parse(ProbeConfig, __doc__)
    from vjepa_agent.probe import run_eval_probe  # torch loads here, after the flags are read

    run_eval_probe(cfg)


if __name__ == "__main__":
    main()
