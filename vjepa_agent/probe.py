"""Frozen-encoder evaluation: cached token features, an attentive probe and a linear probe.

The encoder is frozen, so every clip's tokens are computed once (`extract_features`) and the
probes then train for many epochs on that cache in seconds:

    tokens = extract_features(encoder, dataset)            # (M, N, D) and labels (M,)
    probe = AttentiveProbe(D, K)   or   LinearProbe(D, K)
    train_probe(probe, train_tokens, train_labels)
    evaluate_probe(probe, val_tokens, val_labels, K)       # top1, per_class, chance

`AttentiveProbe` follows V-JEPA's frozen evaluation: one learned query cross-attends over all
tokens (multi-head, pre-LayerNorm, residual MLP), then a linear classifier. `LinearProbe` is a
linear classifier on mean-pooled tokens, standardised without learned affine (MAE's linear probe).
`run_eval_probe(ProbeConfig)` is the body of `vjepa-probe` (`scripts/eval_probe.py`).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vjepa_agent.config import (
    ProbeConfig,
    ProbeKind,
)  # config.py needs no torch: --help answers without it
from vjepa_agent.errors import UserError, require

# ---------------------------------------------------------------------------- features


def default_device() -> torch.device:
    """The device Accelerate would use in this process (CPU when ACCELERATE_USE_CPU=1 or no GPU)."""
    from accelerate import PartialState

    return PartialState().device


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    batch_size: int = 32,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens of every clip from a frozen encoder: -> (tokens (M, N, D) float32 on CPU, labels (M,) long)."""
    from vjepa_agent.data.video import collate_clips

    device = device or default_device()
    encoder = encoder.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_clips)
    tokens, labels = [], []
    for batch in loader:
        video = batch["video"].to(device)  # (B, C, T, H, W)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type != "cpu"):
            out = encoder(video)  # (B, N, D)
        tokens.append(out.float().cpu())
        labels.append(batch["label"])
    return torch.cat(tokens), torch.cat(labels)


# ---------------------------------------------------------------------------- probes


class AttentiveProbe(nn.Module):
    """One learned query cross-attends over all tokens, then a linear classifier: (B, N, D) -> (B, K).

    Multi-head cross-attention with a single query, computed in the token space: the key
    projection is folded into the query (logits = LN(x) @ W_k^T q per head) and the value
    projection applied after pooling (W_v sum_n a_n x_n). This is the same function as projecting
    every token to keys and values (key biases only shift the logits; value biases survive because
    the weights sum to 1), at O(N D H) instead of O(N D^2) per clip, so the probe trains in seconds
    on cached features of thousands of clips.
    """

    def __init__(self, dim: int, num_classes: int, heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        require(dim % heads == 0, f"probe width {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(1, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.norm_tokens = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm_out = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.heads
        # 1. fold the key projection into the query: one (D,) key direction per head
        q = rearrange(self.to_q(self.query), "1 (h e) -> h e", h=h)  # (H, D/H)
        w_k = rearrange(self.to_k.weight, "(h e) d -> h e d", h=h)  # (H, D/H, D)
        key_dir = torch.einsum("he,hed->hd", q, w_k) / math.sqrt(q.shape[-1])  # (H, D)
        # 2. attention weights over the normalised tokens, and the weighted token average per head
        x = self.norm_tokens(tokens)  # (B, N, D)
        attn = torch.einsum("bnd,hd->bhn", x, key_dir).softmax(dim=-1)  # (B, H, N)
        pooled = torch.einsum("bhn,bnd->bhd", attn, x)  # (B, H, D)
        # 3. value projection per head, output projection, residual MLP, classifier
        w_v = rearrange(self.to_v.weight, "(h e) d -> h e d", h=h)  # (H, D/H, D)
        values = torch.einsum("bhd,hed->bhe", pooled, w_v)  # (B, H, D/H)
        x = rearrange(values, "b h e -> b (h e)") + self.to_v.bias  # (B, D)
        x = self.query + self.proj(x)
        x = x + self.mlp(self.norm_mlp(x))
        return self.head(self.norm_out(x))  # (B, K)


class LinearProbe(nn.Module):
    """Mean-pooled tokens, standardised (BatchNorm without affine), then linear: (B, N, D) -> (B, K)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(tokens.mean(dim=1)))  # (B, K)


def build_probe(kind: ProbeKind, dim: int, num_classes: int) -> nn.Module:
    """An untrained probe of the given kind for tokens of width `dim`."""
    if kind == "attentive":
        return AttentiveProbe(dim, num_classes, heads=4 if dim % 4 == 0 else 1)
    if kind == "linear":
        return LinearProbe(dim, num_classes)
    raise UserError(f"unknown probe '{kind}'; choose attentive or linear")


def default_lr(kind: ProbeKind) -> float:
    """Peak learning rate that suits each probe (the linear probe's loss surface is flatter)."""
    return 1e-2 if kind == "linear" else 1e-3


# ---------------------------------------------------------------------------- training, evaluation


def train_probe(
    probe: nn.Module,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 40,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | None = None,
) -> list[float]:
    """AdamW with 5% warmup then cosine decay on cached tokens (M, N, D), labels (M,). Returns the epoch losses."""
    device = device or default_device()
    probe.to(device).train()
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    per_epoch = math.ceil(len(labels) / batch_size)
    total, warmup = epochs * per_epoch, max(1, epochs * per_epoch // 20)
    step, losses = 0, []
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=g)
        epoch_loss = 0.0
        for start in range(0, len(labels), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2 and len(labels) >= 2:  # BatchNorm needs two samples; drop a lone tail
                continue
            scale = min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / total)))
            for group in optimizer.param_groups:
                group["lr"] = lr * scale
            logits = probe(tokens[idx].to(device))
            loss = F.cross_entropy(logits, labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += float(loss.detach()) * len(idx)
            step += 1
        losses.append(epoch_loss / len(labels))
    probe.eval()
    return losses


@torch.no_grad()
def predict(
    probe: nn.Module,
    tokens: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Predicted classes (M,) for tokens (M, N, D)."""
    device = device or default_device()
    probe.to(device).eval()
    preds = [
        probe(tokens[i : i + batch_size].to(device)).argmax(-1).cpu()
        for i in range(0, len(tokens), batch_size)
    ]
    return torch.cat(preds)


def evaluate_probe(
    probe: nn.Module,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    class_names: list[str] | None = None,
) -> dict:
    """Top-1 accuracy, per-class accuracy and chance level on held-out tokens (M, N, D), labels (M,).

    `chance` is the accuracy of always answering the most frequent class of this set (1/K when
    balanced). Classes absent from the set get accuracy None.
    """
    preds = predict(probe, tokens)
    correct = preds == labels
    names = class_names or [str(k) for k in range(num_classes)]
    counts = torch.bincount(labels, minlength=num_classes)
    per_class = {
        names[k]: (float(correct[labels == k].float().mean()) if counts[k] > 0 else None)
        for k in range(num_classes)
    }
    return {
        "top1": float(correct.float().mean()),
        "per_class": per_class,
        "chance": float(counts.max()) / len(labels),
        "num_classes": num_classes,
    }


def fit_and_evaluate(
    kind: ProbeKind,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    class_names: list[str] | None = None,
    epochs: int = 40,
    lr: float | None = None,
    weight_decay: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    factor: int | None = None,
) -> dict:
    """Train a fresh probe on cached (tokens, labels) `train`, evaluate it on `val`; metrics + final train loss.

    `factor`: labels are `a * factor + b` (the synthetic videos: kind * 4 + direction); also
    report how often each part alone is right (`factor_top1`: [a, b]).
    """
    torch.manual_seed(seed)
    probe = build_probe(kind, train[0].shape[-1], num_classes)
    losses = train_probe(
        probe,
        *train,
        epochs=epochs,
        lr=lr or default_lr(kind),
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
    )
    metrics = evaluate_probe(probe, *val, num_classes, class_names)
    metrics["train_top1"] = float((predict(probe, train[0]) == train[1]).float().mean())
    if factor is not None:
        pred, y = predict(probe, val[0]), val[1]
        metrics["factor_top1"] = [
            float((pred // factor == y // factor).float().mean()),
            float((pred % factor == y % factor).float().mean()),
        ]
    metrics["final_train_loss"] = losses[-1]
    return metrics


# ---------------------------------------------------------------------------- position read-out


def object_centres(dataset, tubelet: int) -> torch.Tensor:
    """The main object's centre per tubelet of every synthetic clip: (M, T', 2) pixel (x, y)."""
    centres = torch.stack([dataset.object_centre(i) for i in range(len(dataset))])  # (M, T, 2)
    return rearrange(centres, "m (t p) xy -> m t p xy", p=tubelet).mean(dim=2)


def position_decode(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    ridges: tuple[float, ...] = (1e-2, 1e-1, 1.0, 10.0, 100.0),
) -> dict:
    """Linear (ridge) read-out of the object's position from all of a clip's tokens.

    `train`, `test`: (tokens (M, N, D), centres (M, T', 2)). The tokens are flattened, so each
    token's position in the grid is known to the read-out even when the encoder has no absolute
    position (RoPE); the read-out only has to find *which* tokens hold the object. Solved in the
    dual (M x M) with the ridge (relative to the mean kernel diagonal) picked on the last quarter
    of `train`, refitted on all of it. Returns R^2 over both coordinates on `test` (1 = exact,
    0 = no better than the training mean), the RMSE in pixels and the RMSE of the mean guess.
    """
    x, y = train[0].flatten(1).double(), train[1].flatten(1).double()  # (M, N*D), (M, 2T')
    xt, yt = test[0].flatten(1).double(), test[1].flatten(1).double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    x, xt = (x - mu) / sd, (xt - mu) / sd
    y_mu = y.mean(0)

    def fit_predict(xa, ya, xb, lam):
        k = xa @ xa.T  # (Ma, Ma)
        scale = float(k.diagonal().mean())
        alpha = torch.linalg.solve(k + lam * scale * torch.eye(len(k), dtype=k.dtype), ya - y_mu)
        return xb @ xa.T @ alpha + y_mu

    cut = (3 * len(x)) // 4
    errors = [
        float((fit_predict(x[:cut], y[:cut], x[cut:], lam) - y[cut:]).pow(2).mean())
        for lam in ridges
    ]
    lam = ridges[min(range(len(ridges)), key=errors.__getitem__)]
    pred = fit_predict(x, y, xt, lam)
    sse, sst = float((pred - yt).pow(2).sum()), float((yt - y_mu).pow(2).sum())
    return {
        "r2": 1 - sse / sst,
        "rmse_px": math.sqrt(sse / yt.numel()),
        "mean_guess_rmse_px": math.sqrt(sst / yt.numel()),
        "ridge": lam,
    }


# ---------------------------------------------------------------------------- datasets


def stratified_split(
    labels: list[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (train, val): each class with >= 2 items contributes round(fraction * n) >= 1 items to val."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_class):
        idx = by_class[label]
        rng.shuffle(idx)
        n_val = min(len(idx) - 1, max(1, round(val_fraction * len(idx)))) if len(idx) >= 2 else 0
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def labelled_video_split(cfg: ProbeConfig, frames: int, size: int):
    """(train Subset, val Subset, num_classes, class names) from a class-folder or 'path label' CSV."""
    from vjepa_agent.data.video import VideoClipDataset

    data = VideoClipDataset(
        cfg.data,
        frames_per_clip=frames,
        frame_step=cfg.frame_step,
        fps=cfg.fps,
        crop_size=size,
        augment=False,
        random_start=False,
        seed=cfg.seed,
    )
    labels = [label for _, label in data.samples]
    require(
        len(labels) >= 2, f"'{cfg.data}' holds {len(labels)} video(s); a probe needs at least 2"
    )
    unlabelled = sum(label < 0 for label in labels)
    require(
        unlabelled == 0,
        f"{unlabelled} video(s) in '{cfg.data}' have no label; use one sub-folder per class or a 'path label' CSV",
    )
    num_classes = max(labels) + 1
    root = Path(cfg.data)
    names = [str(k) for k in range(num_classes)]
    if root.is_dir():  # class sub-folders: the label is the index of the sorted folder name
        for path, label in data.samples:
            names[label] = path.relative_to(root).parts[0]
    train, val = stratified_split(labels, cfg.val_fraction, cfg.seed)
    require(
        len(val) > 0, f"no class in '{cfg.data}' has 2 videos, so nothing is left for validation"
    )
    return Subset(data, train), Subset(data, val), num_classes, names


def synthetic_probe_sets(
    num_train: int,
    num_val: int,
    frames: int,
    size: int,
    noise: float,
    seed: int = 0,
    object_scale: tuple[float, float] = (0.14, 0.2),
):
    """Labelled synthetic probe sets (disjoint 'probe_train' / 'probe_test' splits), no augmentation."""
    from vjepa_agent.data.synthetic import SyntheticVideoDataset

    def make(n: int, split: str):
        return SyntheticVideoDataset(
            n,
            frames,
            size,
            seed=seed,
            noise=noise,
            augment=False,
            split=split,
            object_scale=object_scale,
        )

    return make(num_train, "probe_train"), make(num_val, "probe_test")


def synthetic_class_names() -> list[str]:
    from vjepa_agent.data.synthetic import NUM_CLASSES, label_name

    return [label_name(k) for k in range(NUM_CLASSES)]


# ---------------------------------------------------------------------------- the script's body


def run_eval_probe(cfg: ProbeConfig) -> dict:
    """Load the frozen encoder, cache features, train the probe, write out/summary.json; returns it."""
    import json

    from vjepa_agent.checkpoint import load_encoder
    from vjepa_agent.config import require_clip_fits, save_yaml

    cfg.validate()
    encoder, meta = load_encoder(cfg.encoder, cfg.which)
    frames = cfg.frames_per_clip or int(meta.get("frames_per_clip", 16))
    size = cfg.crop_size or int(meta.get("crop_size", 224))
    enc = encoder.cfg
    require_clip_fits(frames, size, enc)
    if cfg.data is None:
        from vjepa_agent.data.synthetic import NUM_CLASSES

        scale = cfg.synthetic_object_scale or meta.get("synthetic_object_scale", (0.14, 0.2))
        train_set, val_set = synthetic_probe_sets(
            cfg.synthetic_train,
            cfg.synthetic_val,
            frames,
            size,
            cfg.synthetic_noise,
            cfg.seed,
            tuple(scale),
        )
        num_classes, names = NUM_CLASSES, synthetic_class_names()
    else:
        train_set, val_set, num_classes, names = labelled_video_split(cfg, frames, size)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    train = extract_features(encoder, train_set, cfg.extract_batch_size)
    val = extract_features(encoder, val_set, cfg.extract_batch_size)
    metrics = fit_and_evaluate(
        cfg.probe,
        train,
        val,
        num_classes,
        names,
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        factor=4 if cfg.data is None else None,  # synthetic labels: kind * 4 + direction
    )
    if cfg.position and cfg.data is None:
        tub = enc.tubelet_size
        metrics["position"] = position_decode(
            (train[0], object_centres(train_set, tub)), (val[0], object_centres(val_set, tub))
        )
    summary = {
        **metrics,
        "num_train": len(train[1]),
        "num_val": len(val[1]),
        "probe": cfg.probe,
        "which": cfg.which,
        "encoder": str(cfg.encoder),
        "data": cfg.data or f"synthetic (noise {cfg.synthetic_noise})",
        "frames_per_clip": frames,
        "crop_size": size,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"{cfg.probe} probe ({cfg.which}): top-1 {summary['top1']:.3f} on {summary['num_val']} clips "
        f"(chance {summary['chance']:.3f}, train {summary['train_top1']:.3f})"
    )
    if "factor_top1" in summary:
        kind, direction = summary["factor_top1"]
        print(
            f"  shape kind right {kind:.3f} (chance 0.25), direction right {direction:.3f} (0.25)"
        )
    if "position" in summary:
        pos = summary["position"]
        print(
            f"object position, linear read-out: R^2 {pos['r2']:.3f}, RMSE {pos['rmse_px']:.2f} px "
            f"(mean guess {pos['mean_guess_rmse_px']:.2f} px)"
        )
    print(out / "summary.json")
    return summary
