"""Configuration: one dataclass per entry point, every field documented, defaults that run on a laptop CPU.

YAML presets under `configs/` hold only what differs from these defaults; command-line flags
override the YAML (see `load_config`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vjepa_agent.errors import UserError, require

Tracker = Literal["tensorboard", "wandb", "none"]
"""Experiment trackers a training loop can log to through Accelerate (none: metrics.jsonl only)."""

# Published ViT sizes: (width, depth, heads, mlp_ratio). V-JEPA / V-JEPA 2 use these dims.
ENCODER_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(dim=192, depth=12, heads=3, mlp_ratio=4.0),
    "small": dict(dim=384, depth=12, heads=6, mlp_ratio=4.0),
    "base": dict(dim=768, depth=12, heads=12, mlp_ratio=4.0),
    "large": dict(dim=1024, depth=24, heads=16, mlp_ratio=4.0),
    "huge": dict(dim=1280, depth=32, heads=16, mlp_ratio=4.0),
    "giant": dict(dim=1408, depth=40, heads=22, mlp_ratio=48 / 11),
}


@dataclass
class EncoderConfig:
    """The video ViT (student and teacher share it)."""

    size: str | None = None
    """Preset name from ENCODER_SIZES (tiny, small, base, large, huge, giant); overrides dim/depth/heads/mlp_ratio."""
    dim: int = 96
    """Token width D."""
    depth: int = 4
    """Number of transformer blocks."""
    heads: int = 4
    """Attention heads (dim must be divisible by heads)."""
    mlp_ratio: float = 4.0
    """Hidden width of the MLP relative to dim."""
    patch_size: int = 16
    """Spatial patch size in pixels."""
    tubelet_size: int = 2
    """Frames per tubelet (temporal patch size)."""
    in_channels: int = 3
    """Input channels C."""
    pos_embed: Literal["rope", "sincos"] = "rope"
    """Position encoding: 3-D RoPE inside attention (V-JEPA 2) or fixed 3-D sin-cos added to tokens (V-JEPA)."""
    qkv_bias: bool = True
    """Bias on the query/key/value projection."""
    activation_checkpointing: bool = False
    """Recompute block activations in backward to save memory."""
    norm_eps: float = 1e-5
    """Epsilon of every LayerNorm (the blocks' and the final one); V-JEPA and V-JEPA 2: 1e-6."""
    rope_layout: Literal["halves", "vjepa2"] = "halves"
    """Where RoPE's rotated channel pairs lie in a head (models/layers.py, Rope3d). halves: this
    library's own; vjepa2: V-JEPA 2's exactly (contiguous t, h, w parts, adjacent pairs, each
    part's frequencies repeated twice across it), what its released models were trained with."""
    sincos_layout: Literal["remainder", "half_time", "uniform"] = "remainder"
    """How the sin-cos positions share dim between t, h, w (models/layers.py, sincos_3d).
    remainder: h and w 2 * floor(dim / 6) each, time the rest (this library's own); half_time:
    time dim / 2, h and w dim / 4 (V-JEPA's uniform_power=False); uniform: 2 * ceil(dim / 6) each,
    cut to dim (V-JEPA's uniform_power=True, its released models)."""

    def resolved(self) -> EncoderConfig:
        """A copy with the size preset (if any) applied."""
        if self.size is None:
            return self
        require(
            self.size in ENCODER_SIZES,
            f"unknown encoder size '{self.size}'; choose one of {', '.join(ENCODER_SIZES)}",
        )
        return dataclasses.replace(self, **ENCODER_SIZES[self.size], size=None)


@dataclass
class PredictorConfig:
    """The narrow ViT that predicts target tokens from context tokens."""

    dim: int = 64
    """Predictor width (V-JEPA: 384)."""
    depth: int = 2
    """Predictor blocks (V-JEPA: 12)."""
    heads: int = 4
    """Predictor attention heads."""
    mlp_ratio: float = 4.0
    """MLP hidden width relative to dim."""


def require_clip_fits(frames: int, size: int, enc: EncoderConfig) -> None:
    """One-line error unless clips of `frames` x `size`^2 tile into the encoder's tubelets and patches."""
    require(
        frames % enc.tubelet_size == 0,
        f"frames_per_clip={frames} is not divisible by tubelet_size={enc.tubelet_size}",
    )
    require(
        size % enc.patch_size == 0,
        f"crop_size={size} is not divisible by patch_size={enc.patch_size}",
    )


@dataclass
class MaskConfig:
    """One multiblock 3-D tube mask: the union of `num_blocks` blocks is the target, its complement the context."""

    num_blocks: int = 8
    """Blocks per sample."""
    spatial_scale: float = 0.15
    """Fraction of the spatial token grid covered by one block, in (0, 1]."""
    temporal_scale: float = 1.0
    """Fraction of the temporal token extent covered by one block, in (0, 1]; 1.0 = full tubes."""
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    """Range of block height/width ratios."""


def default_masks() -> list[MaskConfig]:
    """V-JEPA's two mask configurations: short-range (8 blocks at 0.15) and long-range (2 blocks at 0.7)."""
    return [MaskConfig(8, 0.15), MaskConfig(2, 0.7)]


@dataclass
class PretrainConfig:
    """`scripts/pretrain_video.py`: masked-video JEPA pretraining."""

    # ---- run ----
    out: Path = Path("runs/pretrain")
    """Run folder: config, logs, checkpoints, exported weights, summary.json."""
    data: str | None = None
    """Video folder (recursive) or 'path label' CSV; None = the embedded synthetic videos."""
    seed: int = 0
    """Seed for initialisation, data order, augmentation and masks."""
    max_steps: int = 200
    """Optimizer steps to train (global steps, each over batch_size * grad_accum clips per process)."""
    resume: str | None = None
    """'auto' = newest complete checkpoint in out/checkpoints, or a checkpoint folder path."""
    objective: Literal["jepa", "mae"] = "jepa"
    """Training objective: latent prediction (jepa) or masked pixel reconstruction (mae)."""

    # ---- data ----
    frames_per_clip: int = 8
    """Frames T per clip (divisible by tubelet_size)."""
    frame_step: int = 4
    """Stride between sampled frames (ignored when fps is set)."""
    fps: float | None = None
    """Sample clips at this frame rate instead of a fixed stride."""
    crop_size: int = 64
    """Crop side in pixels (divisible by patch_size)."""
    crop_scale: tuple[float, float] = (0.3, 1.0)
    """Random resized crop: range of the crop's area fraction."""
    crop_aspect: tuple[float, float] = (0.75, 1.35)
    """Random resized crop: range of aspect ratios."""
    synthetic_videos: int = 2048
    """Number of procedurally generated videos when no --data is given."""
    synthetic_noise: float = 0.0
    """Strength in [0, 1] of the unpredictable per-frame nuisance in the synthetic videos."""
    synthetic_object_scale: tuple[float, float] = (0.14, 0.2)
    """Radius range of the synthetic videos' main object, as fractions of the frame (vjepa_agent.data.synthetic)."""
    batch_size: int = 8
    """Clips per process per micro-batch."""
    num_workers: int = 0
    """DataLoader worker processes (each opens its own video reader)."""

    # ---- model ----
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The video ViT."""
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    """The masked-token predictor."""
    masks: list[MaskConfig] = field(default_factory=default_masks)
    """Mask configurations; the loss averages over them."""
    loss_exp: float = 1.0
    """p in mean |pred - LN(teacher)|^p / p (1 = L1)."""
    regularizer: Literal["none", "vicreg", "sigreg"] = "none"
    """Anti-collapse term on the student's context embeddings (JEPA only): VICReg variance + covariance, or SIGReg (LeJEPA)."""
    reg_weight: float = 0.1
    """Weight of the regularizer in the loss (ignored when regularizer is 'none')."""
    freeze_patch_embed: bool = False
    """Keep the tubelet embedding (Conv3d) at its random initialisation (MoCo v3's random patch projection)."""
    center_targets: bool = False
    """JEPA: subtract each clip's mean teacher token from its tokens before the layer norm, so the
    part of the targets shared by every token of a clip (e.g. its background colour) is not predicted."""
    reg_within_clip: bool = False
    """JEPA: apply the regularizer to context tokens minus their clip's mean, so its variance must
    come from differences inside a clip, not from what separates clips."""

    # ---- optimisation ----
    lr: float = 6.25e-4
    """Peak learning rate."""
    start_lr: float = 2e-4
    """Learning rate at step 0 (warmup starts here)."""
    final_lr: float = 1e-6
    """Learning rate at the last step (cosine/linear)."""
    warmup_steps: int = 20
    """Linear warmup steps."""
    lr_schedule: Literal["cosine", "constant", "linear"] = "cosine"
    """Decay after warmup."""
    weight_decay: float = 0.04
    """Weight decay at step 0 (not applied to biases and 1-D parameters)."""
    final_weight_decay: float = 0.4
    """Weight decay at the last step (cosine schedule)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    ema: tuple[float, float] = (0.998, 1.0)
    """EMA momentum, linear from the first to the second value over max_steps; equal values = constant."""
    grad_clip: float | None = 10.0
    """Clip the gradient norm to this value (None = off)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """'auto' = bf16 on GPU, fp32 on CPU; otherwise passed to Accelerate."""
    max_bad_steps: int = 20
    """Stop (exit code 2) after this many steps in a row with a non-finite loss or grad norm; each is skipped."""

    # ---- logging and checkpoints ----
    log_every: int = 10
    """Steps between log lines / tracker points."""
    tracker: Tracker = "tensorboard"
    """Where the log steps go besides metrics.jsonl: TensorBoard (out/tensorboard, the [viz]
    extra), Weights & Biases (the [wandb] extra), or none."""
    checkpoint_every: int = 100
    """Steps between checkpoints (0 = only at the end)."""
    keep_checkpoints: int = 2
    """Keep the newest K checkpoints."""
    monitor_every: int = 10
    """Steps between collapse monitors (teacher std, effective rank)."""
    collapse_std: float = 0.01
    """Warn when the teacher's per-dimension embedding std falls below this."""
    collapse_rank: float = 2.0
    """Warn when the effective rank of teacher embeddings falls below this."""

    def validate(self) -> None:
        """Fail in one line, before any model is built, on values that cannot work."""
        enc = self.encoder.resolved()
        require(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        require(self.max_bad_steps >= 1, f"max_bad_steps must be >= 1, got {self.max_bad_steps}")
        require_clip_fits(self.frames_per_clip, self.crop_size, enc)
        require(
            enc.dim % enc.heads == 0, f"encoder dim={enc.dim} is not divisible by heads={enc.heads}"
        )
        require(
            self.predictor.dim % self.predictor.heads == 0,
            f"predictor dim={self.predictor.dim} is not divisible by heads={self.predictor.heads}",
        )
        require(len(self.masks) >= 1, "at least one mask configuration is needed")
        for m in self.masks:
            require(
                0 < m.spatial_scale <= 1,
                f"mask spatial_scale must be in (0, 1], got {m.spatial_scale}",
            )
            require(
                0 < m.temporal_scale <= 1,
                f"mask temporal_scale must be in (0, 1], got {m.temporal_scale}",
            )
            require(m.num_blocks >= 1, f"mask num_blocks must be >= 1, got {m.num_blocks}")
            lo, hi = m.aspect_ratio
            require(0 < lo <= hi, f"mask aspect_ratio must satisfy 0 < low <= high, got {lo, hi}")
        lo, hi = self.crop_scale
        require(0 < lo <= hi <= 1, f"crop_scale must satisfy 0 < low <= high <= 1, got {lo, hi}")
        for name in ("lr", "start_lr", "final_lr"):
            require(getattr(self, name) >= 0, f"{name} must be >= 0")
        for m in self.ema:
            require(0 <= m <= 1, f"ema momentum must be in [0, 1], got {self.ema}")
        require(self.loss_exp > 0, f"loss_exp must be > 0, got {self.loss_exp}")
        require(self.reg_weight >= 0, f"reg_weight must be >= 0, got {self.reg_weight}")
        lo, hi = self.synthetic_object_scale
        require(
            0 < lo <= hi <= 0.4,
            f"synthetic_object_scale must satisfy 0 < low <= high <= 0.4, got {lo, hi}",
        )
        if self.data is not None:
            require(
                Path(self.data).exists(),
                f"data path '{self.data}' does not exist; pass --data with a video folder or a 'path label' CSV",
            )


# ---------------------------------------------------------------------------- YAML / CLI


def _merge(obj: Any, values: dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass `obj` with `values` applied, recursing into nested dataclasses."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    updates = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in fields:
            raise UserError(
                f"unknown config key '{where}{key}'; valid keys: {', '.join(sorted(fields))}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _merge(current, value, f"{where}{key}.")
        elif key == "masks" and isinstance(value, list):
            value = [_merge(MaskConfig(), m, f"{where}masks[].") for m in value]
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(current, Path) and isinstance(value, str):
            value = Path(value)
        updates[key] = value
    return dataclasses.replace(obj, **updates)


def from_yaml(path: str | Path, base: Any) -> Any:
    """Apply a YAML preset (only the keys that differ from the defaults) to dataclass `base`."""
    path = Path(path)
    require(path.is_file(), f"config file '{path}' does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from e
    require(isinstance(values, dict), f"config file '{path}' must hold a mapping of keys to values")
    return _merge(base, values, "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config (Paths as strings, tuples as lists) for YAML/JSON."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return clean(dataclasses.asdict(cfg))


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_config(cls: type, argv: list[str] | None = None, description: str | None = None) -> Any:
    """Parse `--config FILE` (YAML defaults) then every dataclass field as a flag (tyro) on top."""
    import argparse
    import sys

    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    base = cls()
    if known.config is not None:
        base = from_yaml(known.config, base)
    for f in dataclasses.fields(cls):
        if str(f.type).startswith("list["):  # the annotations are strings here
            rest = merge_repeated(rest, "--" + f.name.replace("_", "-"))
    return tyro.cli(cls, default=base, args=rest, description=description)


def merge_repeated(args: list[str], flag: str) -> list[str]:
    """Every value of a list flag given more than once, as one occurrence at the end:
    `--set a=1 --set b=2` -> `--set a=1 b=2` (argparse alone keeps only the last one's)."""
    kept, values, seen, i = [], [], 0, 0
    while i < len(args):
        if args[i] == flag:
            seen, i = seen + 1, i + 1
            while i < len(args) and not args[i].startswith("--"):
                values.append(args[i])
                i += 1
        elif args[i].startswith(flag + "="):
            seen, i = seen + 1, i + 1
            values.append(args[i - 1].split("=", 1)[1])
        else:
            kept.append(args[i])
            i += 1
    return kept + [flag, *values] if seen > 1 else args


# ---------------------------------------------------------------------------- world model


def default_wm_encoder() -> EncoderConfig:
    """A small ViT for 64x64 frame stacks: 8x8 patches, tubelets of 2 frames, sin-cos positions
    (absolute positions matter: a pooled RoPE encoder cannot tell where the cart is)."""
    return EncoderConfig(dim=64, depth=2, heads=4, patch_size=8, tubelet_size=2, pos_embed="sincos")


@dataclass
class WorldModelConfig:
    """`scripts/train_world_model.py`: an action-conditioned latent world model from rollouts."""

    data: Path = Path("data/cartpole")
    """Rollout store written by scripts/collect_rollouts.py."""
    out: Path = Path("runs/world-model")
    """Output folder: weights (safetensors), config.json, summary.json, logs."""
    seed: int = 0
    """Seed for initialisation, batches and the held-out split."""
    pixel_encoder: Literal["vit", "moments", "jepa", "reconstruction"] = "vit"
    """Pixels: the latent kind. vit: the video ViT below, frozen (random or `encoder_init`), its
    tokens' PCA as the latent, computed once. moments: a fixed object-moment encoder
    (models/moments.py), translation-equivariant, a hand-engineered baseline for scenes of a few
    flat-coloured objects. jepa: the video ViT learned with the predictor and heads, the JEPA way:
    the predictor's imagined latents are matched to a target encoder's latents of the observations
    that followed (`target_encoder`), nothing is reconstructed, and the anti-collapse terms below
    keep the latent informative. reconstruction: the same ViT, predictor and heads, with the
    encoder taught by a pixel decoder (reconstruct the current frame stack) instead of the
    anti-collapse terms: the baseline that JEPA argues against."""
    encoder: EncoderConfig = field(default_factory=default_wm_encoder)
    """Pixel ViT (vit, jepa, reconstruction; its in_channels follow the frames)."""
    encoder_init: str | None = None
    """Optional pretrained encoder (an export or pretraining run folder) to start the ViT from, e.g.
    from `pretrain_video.py --data <this rollout store>` (masked-video JEPA on the rollout frames)."""
    encoder_from: str | None = None
    """jepa / reconstruction: a trained world-model folder whose whole pixel encoder (ViT, pooling
    map, norm) this run starts from; with `steps 0 --frozen-steps N`, a new predictor and heads on
    that encoder, frozen (the encoder's settings and frames must be the folder's)."""
    target_encoder: Literal["ema", "stopgrad"] = "stopgrad"
    """jepa: the encoder whose latents of the next observations are the predictor's targets.
    stopgrad: the encoder itself under stop-gradient (TD-MPC2); ema: an EMA copy of it (momentum
    `ema`; V-JEPA). Planning encodes with the student and rolls the predictor out on its own
    outputs, so an EMA target teaches the predictor to map student latents to teacher latents
    that planning never sees (measured in docs/world_model_encoders.md)."""
    latent_norm: Literal["layernorm", "simnorm", "none"] = "layernorm"
    """jepa / reconstruction: normalisation of the learned latent. layernorm (no affine);
    simnorm: softmax over groups of 8 (TD-MPC2); none."""
    head_gradients: bool = True
    """jepa / reconstruction: the termination, reward and failure losses reach the encoder (task
    gradients shape the latent, as reward and value do in TD-MPC2); False detaches their inputs."""
    encoder_lr_scale: float = 1.0
    """jepa / reconstruction: the encoder's learning rate as a fraction of `lr` (TD-MPC2: 0.3)."""
    rollout_discount: float = 0.5
    """jepa / reconstruction: weight rho ** k of the k-th imagined step in the rollout and head
    losses (TD-MPC2's rho)."""
    random_shift: tuple[int, int] = (0, 0)
    """jepa / reconstruction: while the encoder trains, every observation of a window is shifted
    by up to (rows, columns) pixels, each by its own draw, the edges replicated (DrQ's and TD-MPC2's
    augmentation; TD-MPC2 pads 4 px on 64 px). An observation and the targets after it then sit at
    unrelated offsets, so features of where an edge falls on the patch grid, which a patch
    embedding makes and which say nothing of the state, stop being predictable. Held-out
    evaluation, the frozen phase and planning see the frames as they are."""
    keypoints: int = 0
    """jepa / reconstruction: learned keypoints read from the ViT's tokens, beside their mean and
    max (0 = none). Each keypoint is a softmax over every tubelet slice's tokens (where) and an
    offset of up to half a patch from each token (how far within it), so its (x, y) is a smooth
    function of where an object is, finer than the patch grid, as image moments are; the latent
    gets every slice's keypoints and their changes between slices (spatial soft-argmax, Finn et
    al. 2016, with a CenterNet-style sub-patch offset)."""
    latent: Literal["compact", "tokens"] = "compact"
    """compact: one projected latent per frame (fast planning); tokens: every encoder token."""
    latent_dim: int = 64
    """Width of the compact latent."""
    predictor_dim: int = 64
    """Width of the action-conditioned predictor (planning cost grows with its square)."""
    predictor_depth: int = 2
    """Blocks of the action-conditioned predictor."""
    predictor_heads: int = 4
    """Heads of the action-conditioned predictor."""
    previous_action: bool = True
    """Compact pixel latents end with the action taken before the observation (stacked frames show
    the velocity before the last push, not after it); state latents never need it."""
    fuse_action: bool = True
    """Compact latents: add the action embedding to the step's latent token instead of giving the
    action its own token (one token per step: half the predictor's work, and no attention at all
    with context 1). Token latents always interleave action tokens (V-JEPA 2-AC)."""
    context: int = 1
    """Past steps the predictor sees: 1 = Markov (enough with frame-stacked observations and the
    fastest to plan with); a value >= seq_len trains with full block-causal context over the sequence
    and rolls out with a sliding window of seq_len steps."""
    seq_len: int = 8
    """Transitions per training sequence (teacher forcing)."""
    rollout_steps: int = 4
    """Autoregressive steps in the multi-step rollout loss."""
    rollout_weight: float = 1.0
    """Weight of the rollout loss."""
    termination_weight: float = 0.5
    """Weight of the termination-head loss."""
    reward_weight: float = 0.5
    """Weight of the reward-head loss."""
    failure_weight: float = 0.5
    """Weight of the failure-head loss (0 = no failure head). The failure head predicts the logit of
    failure_discount ** k, k = steps until the episode terminates (capped at 3 / (1 - discount),
    the cap where it never does): about k * log(failure_discount), minus the steps left before
    failure under the data's policies, which planners can maximise where the termination
    probability is flat (~0 away from failure)."""
    failure_discount: float = 0.95
    """Discount of the failure head's target, in (0, 1): about 1 / (1 - discount) steps of warning."""
    inverse_weight: float = 0.0
    """Learned pixel latents: weight of an inverse-dynamics loss (predict a_t from z_t and
    z_t+inverse_gap), which makes the latent keep what the action changes."""
    inverse_gap: int = 2
    """jepa: steps between the two latents of the inverse-dynamics loss (CartPole integrates with
    explicit Euler: a_t moves the cart and pole from t + 2 on, so a gap of 1 is at chance)."""
    variance_weight: float = 1.0
    """Learned pixel latents: weight of the VICReg variance term, a hinge keeping each latent
    dimension's std over the batch >= 1."""
    covariance_weight: float = 0.04
    """jepa: weight of the VICReg covariance term (squared off-diagonal covariances over the batch,
    divided by the width), which spreads information over the latent's dimensions."""
    time_variance_weight: float = 0.0
    """jepa: weight of a hinge keeping each dimension's std over the steps of a training window
    >= 0.3 of its std over the batch, or of 1 if that is less (PLDM's variance over time, made
    scale-free): the latent must
    change where the scene does, not only across episodes."""
    sigreg_weight: float = 0.0
    """jepa: weight of SIGReg (LeJEPA / LeWM; about 0.09 there): an Epps-Pulley test, on random
    1-D projections, that the batch of latents is a standard Gaussian in every direction."""
    contrast_weight: float = 0.0
    """jepa: weight of a temporal contrast (InfoNCE, as in CPC): each predicted next latent must
    pick its own target among all the targets of the batch, the other steps of its own window
    included, so the latent has to tell apart frames a step apart (a slow feature such as the
    cart's position cannot), and only what the predictor can foresee helps it do so."""
    contrast_temperature: float = 0.1
    """jepa: temperature of the temporal contrast's cosine similarities."""
    reconstruction_weight: float = 1.0
    """reconstruction: weight of the pixel decoder's MSE on the normalised frames."""
    ema: float = 0.99
    """EMA momentum of the target encoder (pixels)."""
    batch_size: int = 32
    """Sequences per step."""
    steps: int = 6000
    """Optimizer steps (jepa / reconstruction: steps that train the encoder, with the predictor
    and heads)."""
    frozen_steps: int = 0
    """jepa / reconstruction: steps of a fresh predictor and heads after `steps`, the encoder
    frozen and every latent cached (a few ms a step on CPU, against a learned-encoder step's
    hundreds); 0 = none."""
    frozen_batch_size: int = 64
    """jepa / reconstruction: sequences per step of the frozen_steps phase."""
    lr: float = 1e-3
    """Peak learning rate (cosine decay after 5% warmup)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    compile: Literal["on", "off"] = "off"
    """torch.compile the losses of the cached-latent loop (the fixed encoders, and a learned
    encoder's frozen phase): the step's many small ops fused, about half the time of a step on
    CPU once compiled, for a compilation when the loop starts that takes seconds on a warm cache
    and minutes on a cold one on 2 CPU cores (docs/experiments.md); eager again, with a warning,
    where compiling fails. The CartPole learned-encoder preset turns it on (a loop of 3000 steps
    for its frozen phase and one per on-policy round)."""
    holdout: float = 0.1
    """Fraction of episodes held out for evaluation."""
    eval_horizon: int = 10
    """Longest horizon of the latent prediction error evaluation."""
    log_every: int = 50
    """Steps between log lines (metrics.jsonl, appended as the run goes, and the tracker)."""
    tracker: Tracker = "tensorboard"
    """Where the log steps go besides metrics.jsonl: TensorBoard (out/tensorboard, the [viz]
    extra), Weights & Biases (the [wandb] extra), or none. TensorBoard, as in pretraining: a run
    folder of either kind opens the same way, and the [viz] extra it needs is the one vjepa-plan
    (which trains world models too) needs for its plot anyway; none for a core install or for
    many short runs from code, where metrics.jsonl, written either way, is enough."""
    checkpoint_every: int = 500
    """Steps between resumable checkpoints in out/checkpoints/step_XXXXXXXX (0 = none)."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept (an older one is deleted only after a newer one is written and checked)."""
    resume: Literal["auto"] | None = None
    """auto: continue from the newest checkpoint under out that loads (skipping damaged ones with a
    warning), bit for bit as if never interrupted; None: start fresh."""

    def validate(self) -> None:
        require(
            self.steps >= 1 or (self.steps == 0 and self.encoder_from and self.frozen_steps),
            f"steps must be >= 1 (0 only with encoder_from and frozen_steps), got {self.steps}",
        )
        require(
            self.encoder_from is None or self.pixel_encoder in ("jepa", "reconstruction"),
            f"encoder_from starts a learned encoder (jepa, reconstruction), not {self.pixel_encoder}",
        )
        require(self.frozen_steps >= 0, f"frozen_steps must be >= 0, got {self.frozen_steps}")
        require(
            len(self.random_shift) == 2 and min(self.random_shift) >= 0,
            f"random_shift must be two pixel counts >= 0 (rows, columns), got {self.random_shift}",
        )
        require(self.keypoints >= 0, f"keypoints must be >= 0, got {self.keypoints}")
        require(
            self.frozen_batch_size >= 1,
            f"frozen_batch_size must be >= 1, got {self.frozen_batch_size}",
        )
        require(
            not self.frozen_steps or self.pixel_encoder in ("jepa", "reconstruction"),
            f"frozen_steps trains a learned encoder's predictor and heads after it is frozen; "
            f"the {self.pixel_encoder} encoder is fixed already: drop frozen_steps",
        )
        require(
            self.checkpoint_every >= 0,
            f"checkpoint_every must be >= 0, got {self.checkpoint_every}",
        )
        require(
            self.keep_checkpoints >= 1,
            f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}",
        )
        require(self.seq_len >= 2, f"seq_len must be >= 2, got {self.seq_len}")
        require(
            1 <= self.rollout_steps <= self.seq_len,
            f"rollout_steps must be in [1, seq_len={self.seq_len}], got {self.rollout_steps}",
        )
        require(0 <= self.ema <= 1, f"ema must be in [0, 1], got {self.ema}")
        require(
            self.context == 1 or self.context >= self.seq_len,
            f"context must be 1 or >= seq_len={self.seq_len}, got {self.context}",
        )
        require(0 < self.holdout < 1, f"holdout must be in (0, 1), got {self.holdout}")
        require(
            0 < self.failure_discount < 1,
            f"failure_discount must be in (0, 1), got {self.failure_discount}",
        )
        require(self.failure_weight >= 0, f"failure_weight must be >= 0, got {self.failure_weight}")
        require(
            0 < self.rollout_discount <= 1,
            f"rollout_discount must be in (0, 1], got {self.rollout_discount}",
        )
        for name in (
            "variance_weight",
            "covariance_weight",
            "time_variance_weight",
            "sigreg_weight",
            "contrast_weight",
            "reconstruction_weight",
        ):
            require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        require(
            self.contrast_temperature > 0,
            f"contrast_temperature must be > 0, got {self.contrast_temperature}",
        )
        if self.pixel_encoder in ("jepa", "reconstruction"):
            require(
                self.latent == "compact",
                f"pixel_encoder {self.pixel_encoder} learns one compact latent per frame; drop "
                "--latent tokens (it is for the frozen ViT)",
            )
        if self.pixel_encoder == "moments":
            require(
                self.latent == "compact" and self.encoder_init is None,
                "pixel_encoder moments is a fixed encoder with one compact latent per frame; drop "
                "--latent tokens and --encoder-init (they are for the ViT)",
            )


@dataclass
class CollectConfig:
    """`scripts/collect_rollouts.py`: environment rollouts into a memory-mapped rollout store."""

    env: str = "CartPole-v1"
    """Gymnasium env id."""
    steps: int = 10000
    """Transitions to collect (appended if the store exists)."""
    out: Path = Path("data/cartpole")
    """Rollout store folder."""
    obs: Literal["pixels", "state"] = "pixels"
    """Observation mode; the state vector is stored in both."""
    num_envs: int = 4
    """Parallel (vectorised) envs."""
    seed: int = 0
    """Seed of the random policy and the env resets."""
    size: int | tuple[int, int] = 64
    """Frame side in pixels, or (height, width)."""
    frame_stack: int = 4
    """Consecutive frames per observation: 2 = one tubelet, so velocity is visible; 4 (default) =
    two tubelets, which also show how the velocity changed (docs/experiments.md)."""
    grayscale: bool = False
    """Single-channel frames."""
    video_dir: Path | None = None
    """Also write each episode as mp4 here (for pretrain_video.py --data)."""
    sticky_actions: float = 0.0
    """Probability that the random policy repeats an env's previous action instead of drawing a
    fresh one, in [0, 1): longer pushes, whose effects a model can see."""
    exploring_starts: bool = False
    """Start episodes with some state components drawn uniformly
    (vjepa_agent.envs.starts.DEFAULT_START_RANGES; CartPole: the cart anywhere within 1.5 m of
    the centre) instead of the env's own resets."""
    start_spread: Literal["position", "state"] = "position"
    """With exploring_starts, which components: position (the ranges above) or state
    (STATE_START_RANGES; CartPole: x, v, theta and omega all spread)."""


# ---------------------------------------------------------------------------- planning


@dataclass
class PlannerConfig:
    """Which planner and its settings."""

    planner: Literal["auto", "cem", "mppi", "categorical_cem"] = "auto"
    """auto = categorical_cem for discrete actions, cem for continuous ones."""
    horizon: int = 10
    """Planning horizon H."""
    samples: int = 64
    """Candidate sequences S per iteration."""
    elites: int = 8
    """Elites refitting the sampling distribution."""
    iterations: int = 3
    """Planner iterations per decision."""
    temperature: float = 0.5
    """MPPI temperature."""
    momentum: float = 0.1
    """Weight of the previous distribution in each refit."""
    replan_every: int = 1
    """Actions executed from each plan before replanning."""
    mirror_actions: list[int] | None = None
    """Pixels and discrete actions: the env's left-right mirror symmetry, as the action that each
    action becomes in the mirrored scene (CartPole: [1, 0]); None = off. Every candidate
    sequence is scored twice, from the observation and with the mirrored actions from its
    horizontal mirror image, and the two costs are averaged, so a learned model's left-right
    bias cancels (on CartPole: a model that balances around a pole leaning slightly one way and
    so drives the cart off that side; docs/world_model_encoders.md). Twice the model calls."""


@dataclass
class ObjectiveConfig:
    """The planner's cost of imagined trajectories (`agent.LatentObjective`'s weights), and the
    state whose rendering is the default goal."""

    goal_weight: float = 0.0
    """Weight of the distance to the goal latent."""
    termination_penalty: float = 0.0
    """Extra cost of predicted termination."""
    termination_logit_weight: float = 0.0
    """Weight of the termination head's logits summed over the horizon, a smooth distance to
    failure."""
    failure_logit_weight: float = 0.0
    """Weight of the failure head's logits summed over the horizon, about minus the predicted steps
    left before failure (needs a model trained with a failure head)."""
    reward_weight: float = 1.0
    """Weight of the predicted rewards."""
    goal_state: list[float] | None = None
    """A state whose rendering (pixels) or normalised vector (state) is the goal latent, used when
    goal_weight is not 0 (CartPole: the pole upright over the centre)."""
    goal_state_weights: list[float] | None = None
    """State mode: per-component weights of the goal distance, in the state's own units."""


@dataclass
class Recipe:
    """Everything `plan.py` collects, trains and plans with for one env and observation mode: the
    existing configs, composed. The shipped recipes are `configs/recipes/*.yaml`
    (`vjepa_agent.recipes`); a run saves the one it resolved as `recipe.yaml`."""

    collect: CollectConfig = field(default_factory=lambda: CollectConfig())
    """The random-policy data (its env, out, obs, seed and num_envs come from the run)."""
    world_model: WorldModelConfig = field(default_factory=lambda: WorldModelConfig())
    """The world model (its data, out, seed and tracker come from the run)."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """The planner's cost."""
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    """The planner and its settings."""
    rounds: int = 0
    """jepa / reconstruction: rounds of on-policy data after the first model. In each, the MPC agent
    of the model so far collects round_steps steps from the env's own starts into the run's data,
    and a new predictor and heads train on the frozen encoder over all of it."""
    round_steps: int = 10000
    """Environment steps each on-policy round collects."""


# plan.py's shortcut flags: each one, when given, overrides the recipe field it names
PLAN_SHORTCUTS: dict[str, str] = {
    **{
        f: f"planner.{f}"
        for f in (
            "planner",
            "horizon",
            "samples",
            "elites",
            "iterations",
            "temperature",
            "momentum",
            "replan_every",
        )
    },
    **{
        f: f"objective.{f}"
        for f in (
            "goal_weight",
            "termination_penalty",
            "termination_logit_weight",
            "reward_weight",
            "failure_logit_weight",
        )
    },
    "collect_steps": "collect.steps",
    "frame_stack": "collect.frame_stack",
    "sticky_actions": "collect.sticky_actions",
    "exploring_starts": "collect.exploring_starts",
    "start_spread": "collect.start_spread",
    "train_steps": "world_model.steps",
    "frozen_steps": "world_model.frozen_steps",
    "pixel_encoder": "world_model.pixel_encoder",
    "rounds": "rounds",
    "round_steps": "round_steps",
}


@dataclass
class PlanConfig:
    """`scripts/plan.py`: collect, train a world model (or load one), plan in latent space, report.

    What to collect, train and plan with is the env's recipe (`configs/recipes/`, a typed `Recipe`
    per env and observation mode). Every recipe value can be changed with `--set`; the flags from
    --planner on are shortcuts for the most used ones (None = the recipe's value)."""

    env: str = "CartPole-v1"
    """Gymnasium env id."""
    obs: Literal["pixels", "state"] = "pixels"
    """Observation mode of the world model."""
    model: Path | None = None
    """A trained world-model folder; None = collect, train and cache one in out/model."""
    episodes: int = 10
    """Evaluation episodes (their seeds differ from those used for data collection)."""
    seed: int = 0
    """Seed of collection, training and planning."""
    out: Path | None = None
    """Run folder (default runs/plan-<env>-<obs>); the resolved recipe is saved as recipe.yaml."""
    goal: bool = False
    """Plan toward the env's goal image (envs that expose one, e.g. vjepa_agent/PointGoal-v0)."""
    recipe: Path | None = None
    """A recipe YAML (for example a run's recipe.yaml) applied over the env's shipped one."""
    set: list[str] = field(default_factory=list)
    """Recipe values, `section.field=value` (YAML values), applied after --recipe:
    `--set world_model.lr=3e-4 planner.horizon=20 rounds=4`."""
    tracker: Tracker = "tensorboard"
    """Where the world model's training logs go besides its metrics.jsonl (WorldModelConfig.tracker:
    tensorboard, wandb or none)."""
    max_episode_steps: int | None = None
    """Cap on evaluation episode length (None = the env's own limit)."""
    video: bool = True
    """Write an mp4 of the first evaluation episode."""
    planner: Literal["auto", "cem", "mppi", "categorical_cem"] | None = None
    """planner.planner: auto = categorical_cem for discrete actions, cem for continuous ones."""
    horizon: int | None = None
    """planner.horizon: planning horizon H."""
    samples: int | None = None
    """planner.samples: candidate sequences S per iteration."""
    elites: int | None = None
    """planner.elites: elites refitting the sampling distribution."""
    iterations: int | None = None
    """planner.iterations: planner iterations per decision."""
    temperature: float | None = None
    """planner.temperature: MPPI temperature."""
    momentum: float | None = None
    """planner.momentum: weight of the previous distribution in each refit."""
    replan_every: int | None = None
    """planner.replan_every: actions executed from each plan before replanning."""
    goal_weight: float | None = None
    """objective.goal_weight: weight of the goal-latent distance."""
    termination_penalty: float | None = None
    """objective.termination_penalty: extra cost of predicted termination."""
    termination_logit_weight: float | None = None
    """objective.termination_logit_weight: weight of the summed termination logits."""
    reward_weight: float | None = None
    """objective.reward_weight: weight of the predicted rewards."""
    failure_logit_weight: float | None = None
    """objective.failure_logit_weight: weight of the failure head's summed logits."""
    collect_steps: int | None = None
    """collect.steps: random-policy environment steps for training."""
    frame_stack: int | None = None
    """collect.frame_stack: pixels, consecutive frames per observation (with --model, the model's
    own)."""
    sticky_actions: float | None = None
    """collect.sticky_actions: the random policy repeats its previous action with this probability."""
    exploring_starts: bool | None = None
    """collect.exploring_starts: collection episodes start with some state components drawn
    uniformly (vjepa_agent.envs.starts); evaluation episodes always start from the env's own
    resets. `--exploring-starts False` turns it off."""
    start_spread: Literal["position", "state"] | None = None
    """collect.start_spread: with exploring starts, which components spread."""
    train_steps: int | None = None
    """world_model.steps: world-model optimizer steps (for jepa and reconstruction, the steps that
    train the encoder)."""
    frozen_steps: int | None = None
    """world_model.frozen_steps: jepa / reconstruction, predictor and heads trained on the frozen
    encoder's cached latents after train_steps."""
    pixel_encoder: Literal["vit", "moments", "jepa", "reconstruction"] | None = None
    """world_model.pixel_encoder: pixels, the world model's encoder. It also picks the recipe: jepa
    and reconstruction take the env's `learned` section (frames, steps, losses, rounds)."""
    rounds: int | None = None
    """rounds: jepa / reconstruction, rounds of on-policy data after the first model."""
    round_steps: int | None = None
    """round_steps: environment steps each on-policy round collects."""


@dataclass
class DiagnoseConfig:
    """`scripts/diagnose_pixel_model.py`: how much of the true state a pixel world model's latents
    hold, on its data and in closed loop (see vjepa_agent/latent_diagnostics.py)."""

    model: Path = Path("runs/plan-CartPole-v1-pixels/model")
    """Pixel world-model folder."""
    data: Path = Path("runs/plan-CartPole-v1-pixels/data")
    """A rollout store of the same env (it keeps the true states beside the frames)."""
    state_model: Path | None = None
    """A state world model of the same env: with it, the closed-loop runs (probe-read states, and
    true states plus noise of the probe's held-out error)."""
    episodes: int = 5
    """Closed-loop episodes of each kind."""
    seed: int = 0
    """Seed of the probe, the held-out split, the planner and the evaluation resets."""
    probe_steps: int = 3000
    """Adam steps of the state probe (batch 256)."""
    max_episode_steps: int | None = None
    """Cap on closed-loop episode length (None = the env's own limit)."""
    out: Path = Path("runs/diagnose")
    """Where summary.json goes."""


# ---------------------------------------------------------------------------- evaluation

ProbeKind = Literal["attentive", "linear"]


@dataclass
class ProbeConfig:
    """`vjepa-probe` (`scripts/eval_probe.py`): frozen-encoder probe on labelled videos."""

    encoder: str | None = None
    """Exported encoder folder (out/export) or a training run folder (required)."""
    data: str | None = None
    """Folder with one sub-folder per class, or a 'path label' CSV; None = the labelled synthetic videos."""
    probe: ProbeKind = "attentive"
    """attentive (one learned query cross-attending over all tokens) or linear (mean-pooled tokens)."""
    which: Literal["teacher", "student"] = "teacher"
    """Weights to probe: teacher (the exported encoder: EMA teacher for JEPA) or student."""
    out: Path = Path("runs/probe")
    """Output folder: summary.json, config.yaml."""
    val_fraction: float = 0.2
    """Fraction of each class held out for validation (--data only)."""
    frames_per_clip: int | None = None
    """Frames per clip; None = the encoder's pretraining value."""
    crop_size: int | None = None
    """Clip side in pixels; None = the encoder's pretraining value."""
    frame_step: int = 4
    """Stride between sampled frames (--data only; ignored when fps is set)."""
    fps: float | None = None
    """Sample clips at this frame rate instead of a fixed stride (--data only)."""
    synthetic_train: int = 1024
    """Synthetic probe-training videos (without --data)."""
    synthetic_val: int = 512
    """Synthetic probe-test videos (without --data; a disjoint split)."""
    synthetic_noise: float = 0.0
    """Nuisance strength in [0, 1] of the synthetic videos."""
    synthetic_object_scale: tuple[float, float] | None = None
    """Radius range of the synthetic videos' main object; None = the encoder's pretraining value."""
    epochs: int = 40
    """Probe training epochs over the cached features."""
    lr: float | None = None
    """Peak AdamW learning rate; None = 1e-3 (attentive) / 1e-2 (linear)."""
    weight_decay: float = 0.05
    """AdamW weight decay of the probe."""
    batch_size: int = 64
    """Probe training batch size."""
    extract_batch_size: int = 32
    """Clips per encoder forward while caching features."""
    seed: int = 0
    """Seed for the split, the synthetic videos and the probe's initialisation."""
    position: bool = True
    """Also read the main object's position out of the tokens (linear, synthetic videos only)."""

    def validate(self) -> None:
        """Fail in one line before any model is built."""
        require(self.encoder is not None, "pass --encoder with an export folder or a run folder")
        require(
            0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}"
        )
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(
            self.synthetic_train >= 1 and self.synthetic_val >= 1,
            "synthetic_train and synthetic_val must be >= 1",
        )
        require(
            0 <= self.synthetic_noise <= 1,
            f"synthetic_noise must be in [0, 1], got {self.synthetic_noise}",
        )
        if self.data is not None:
            require(
                Path(self.data).exists(),
                f"data path '{self.data}' does not exist; pass a folder with class sub-folders or a 'path label' CSV",
            )


@dataclass
class ConvertConfig:
    """`vjepa-convert` (`scripts/convert_checkpoint.py`): an official V-JEPA / V-JEPA 2 training
    checkpoint as this library's encoder export (vjepa_agent/convert.py)."""

    checkpoint: Path | None = None
    """The `torch.save` file of V-JEPA or V-JEPA 2 training, a dict holding the `encoder`,
    `target_encoder` and `predictor` state dicts (required)."""
    out: Path = Path("runs/converted")
    """Export folder to write: encoder.safetensors, student.safetensors, config.json."""
    key: Literal["target_encoder", "encoder"] = "target_encoder"
    """Which encoder becomes encoder.safetensors (what load_encoder and the probe use by default):
    the EMA target encoder, or the encoder trained by gradient."""
    size: str | None = None
    """ViT size preset (ENCODER_SIZES: tiny, small, base, large, huge, giant); the flags below
    override its numbers (V-JEPA 2's vit_giant with 16 heads: --size giant --heads 16)."""
    dim: int | None = None
    """Token width (None = the size preset's)."""
    depth: int | None = None
    """Transformer blocks (None = the size preset's)."""
    heads: int | None = None
    """Attention heads (None = the size preset's)."""
    mlp_ratio: float | None = None
    """MLP hidden width relative to dim (None = the size preset's, else 4)."""
    patch_size: int = 16
    """Spatial patch size in pixels."""
    tubelet_size: int = 2
    """Frames per tubelet."""
    pos_embed: Literal["rope", "sincos"] = "rope"
    """rope: V-JEPA 2 (3-D RoPE); sincos: V-JEPA (a fixed sin-cos table, read from the
    checkpoint's pos_embed and checked against this library's layouts)."""
    frames_per_clip: int = 16
    """Frames per clip the model was trained on (recorded for the probe; with sincos it must match
    the pos_embed table)."""
    crop_size: int = 256
    """Clip side in pixels the model was trained on (as frames_per_clip)."""

    def encoder_config(self) -> EncoderConfig:
        """The encoder this checkpoint holds, with V-JEPA's LayerNorm epsilon and position layouts
        (the sin-cos layout is settled from the checkpoint's table by the conversion)."""
        base = EncoderConfig(size=self.size).resolved() if self.size else EncoderConfig()
        given = {
            "dim": self.dim,
            "depth": self.depth,
            "heads": self.heads,
            "mlp_ratio": self.mlp_ratio,
        }
        return dataclasses.replace(
            base,
            **{k: v for k, v in given.items() if v is not None},
            patch_size=self.patch_size,
            tubelet_size=self.tubelet_size,
            pos_embed=self.pos_embed,
            norm_eps=1e-6,
            rope_layout="vjepa2",
        )

    def validate(self) -> None:
        """Fail in one line before the checkpoint is read."""
        require(self.checkpoint is not None, "pass --checkpoint with a V-JEPA / V-JEPA 2 .pt file")
        require(
            self.size is not None or None not in (self.dim, self.depth, self.heads),
            "pass --size (tiny, small, base, large, huge, giant) or all of --dim, --depth, --heads",
        )
        enc = self.encoder_config()
        require(enc.dim % enc.heads == 0, f"dim={enc.dim} is not divisible by heads={enc.heads}")
        require_clip_fits(self.frames_per_clip, self.crop_size, enc)


def compare_pretrain_defaults() -> PretrainConfig:
    """The pretraining shared by every compared run: sized for 2 CPU cores (see README)."""
    return PretrainConfig(
        max_steps=1000,
        synthetic_videos=2048,
        batch_size=8,
        frames_per_clip=8,
        crop_size=64,
        encoder=EncoderConfig(dim=96, depth=4, heads=4, patch_size=8),
        predictor=PredictorConfig(dim=64, depth=2, heads=4),
        # The library default (0.998 -> 1.0) is V-JEPA's, made for ~10^5 steps: over 10^3 steps it
        # would leave ~40% of the random initialisation in the probed teacher.
        ema=(0.99, 0.999),
        # VICReg on the student's context tokens (JEPA only; MAE ignores it): without it the
        # teacher's token variance collapses onto the clips' background colour and the probe
        # falls below the random initialisation (docs/video_jepa.md)
        regularizer="vicreg",
        reg_weight=0.1,
        # and both against the clip-global component (the background colour): targets centred
        # per clip, the regularizer on clip-centred context tokens
        center_targets=True,
        reg_within_clip=True,
        warmup_steps=50,
        log_every=10,
        monitor_every=10,
        checkpoint_every=0,
        keep_checkpoints=1,
    )


@dataclass
class CompareConfig:
    """`vjepa-compare` (`scripts/compare_objectives.py`): JEPA vs MAE across noise levels, or the EMA ablation."""

    out: Path = Path("runs/compare")
    """Output folder: runs/, results.md, compare.png, summary.json."""
    ablate: Literal["ema"] | None = None
    """None = compare the objectives JEPA and MAE; 'ema' = JEPA with the configured EMA vs momentum 0."""
    budget: float = 1.0
    """Scales pretraining steps and all video counts (run times: docs/video_jepa.md)."""
    noise_levels: tuple[float, ...] | None = None
    """Nuisance strengths in [0, 1]; None = (0, 0.5, 1) for the objectives, (0, 1) for the EMA ablation."""
    probes: tuple[ProbeKind, ...] = ("attentive", "linear")
    """Frozen probes trained on each encoder."""
    probe_train_videos: int = 4096
    """Labelled videos the probes train on (split 'probe_train'; scaled by budget, at least 32).
    Trained encoders need thousands: from 512 clips the attentive probe misses most of what their
    tokens hold (docs/video_jepa.md)."""
    probe_test_videos: int = 1024
    """Labelled videos the probes are scored on (split 'probe_test'; scaled by budget, at least 32)."""
    probe_epochs: int = 40
    """Probe training epochs over the cached features."""
    random_baseline: bool = True
    """Also probe the randomly initialised encoder (the common starting point of every run)."""
    seeds: tuple[int, ...] = (0,)
    """Pretraining seeds (initialisation, data order, masks); every number is reported as mean and std over them."""
    jobs: int | None = None
    """Runs at once, each in its own process; None = one per CPU core without a GPU (single-threaded each), 1 with one."""
    pretrain: PretrainConfig = field(default_factory=compare_pretrain_defaults)
    """The pretraining shared by every run; objective, synthetic_noise, out (and ema) are set per run."""

    def levels(self) -> tuple[float, ...]:
        if self.noise_levels is not None:
            return tuple(self.noise_levels)
        return (0.0, 1.0) if self.ablate == "ema" else (0.0, 0.5, 1.0)

    def validate(self) -> None:
        """Fail in one line before anything is trained."""
        require(self.budget > 0, f"budget must be > 0, got {self.budget}")
        levels = self.levels()
        require(len(levels) >= 1, "pass at least one noise level")
        require(all(0 <= x <= 1 for x in levels), f"noise levels must lie in [0, 1], got {levels}")
        require(len(set(levels)) == len(levels), f"noise levels must be distinct, got {levels}")
        require(len(self.probes) >= 1, "pass at least one probe (attentive, linear)")
        require(self.probe_epochs >= 1, f"probe_epochs must be >= 1, got {self.probe_epochs}")
        require(self.jobs is None or self.jobs >= 1, f"jobs must be >= 1, got {self.jobs}")
        require(len(self.seeds) >= 1, "pass at least one seed")
        require(
            len(set(self.seeds)) == len(self.seeds), f"seeds must be distinct, got {self.seeds}"
        )
        require(
            self.pretrain.data is None,
            "the comparison uses the labelled synthetic videos; leave pretrain.data unset",
        )
        self.pretrain.validate()
