"""Convert an official V-JEPA / V-JEPA 2 checkpoint into an encoder export of this library.

    vjepa-convert --checkpoint vitl.pt --size large --crop-size 256 --out runs/vitl-official
    vjepa-convert --checkpoint vitl16.pth.tar --size large --pos-embed sincos --crop-size 224
    vjepa-convert --checkpoint vitl.pt --size large --key encoder --out runs/vitl-student

--checkpoint is the torch.save file of V-JEPA or V-JEPA 2 training (the 'encoder',
'target_encoder' and 'predictor' state dicts, keys prefixed 'module.' and 'backbone.'), read
without pickle. The --key encoder (default the EMA target encoder) becomes encoder.safetensors,
the checkpoint's 'encoder' student.safetensors; the predictor is not converted. Every key and
shape must match the configured encoder (a one-line error names the first that does not). The
folder written to --out is what vjepa-probe --encoder, vjepa-train-world-model --encoder-init and
vjepa_agent.checkpoint.load_encoder take; its tokens equal the reference model's on the same clip.
"""

from vjepa_agent.cli import parse
from vjepa_agent.config import ConvertConfig
from vjepa_agent.errors import cli_entry


@cli_entry
def main():
    cfg = parse(ConvertConfig, __doc__)
    cfg.validate()
    from vjepa_agent.convert import convert_checkpoint  # torch loads here, after the flags are read

    print(convert_checkpoint(cfg))


if __name__ == "__main__":
    main()
