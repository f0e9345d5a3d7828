"""Rollout storage: transitions as a TensorDict memory-mapped on disk, sampled as (B, T) windows.

Layout of a store folder::

    meta.json          env id, obs mode, size, frame_stack, action space, num_transitions, version
    chunks/00000/      one `TensorDict.memmap` per `append`, batch size [N_chunk]
    chunks/00001/
    ...

Keys follow TorchRL; N transitions, obs shape O, pixel shape P = (C, T_f, H, W)::

    "observation"              (N, *O) float32   state vector (always stored)
    "pixels"                   (N, *P) uint8     pixel mode only
    "action"                   (N, A) float32    Box actions; (N,) int64 for Discrete
    "episode"                  (N,) int64        global episode id, unique across chunks
    "step"                     (N,) int64        step within the episode, 0 after a reset
    ("next", "observation")    (N, *O)           true next obs; the terminal obs on a final step
    ("next", "pixels")         (N, *P)
    ("next", "reward")         (N, 1) float32
    ("next", "terminated" | "truncated" | "done")  (N, 1) bool

Each episode's transitions are contiguous and in step order within one chunk, so a window of T
consecutive rows inside one episode is a valid sequence. An episode cut by the end of a
collection ends with done=False.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import torch
from tensordict import TensorDict, TensorDictBase

from vjepa_agent.errors import UserError

STORE_VERSION = 1
REQUIRED_META = ("env_id", "obs")


class Episode(NamedTuple):
    """One episode's rows in `RolloutStore.data`: `data[start : start + length]`."""

    id: int
    start: int
    length: int


def describe_space(space: gym.Space) -> dict[str, Any]:
    """A JSON-able description of an action space: type, shape, and n or low/high."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "shape": [], "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    raise UserError(
        f"action space {space} is not supported; use an env with a Discrete or Box action space"
    )


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _episode_runs(episode: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Episode ids and lengths of the runs in an (N,) episode column."""
    ids, counts = torch.unique_consecutive(episode, return_counts=True)
    return ids, counts


class RolloutStore:
    """Append-only transitions on disk (TensorDict memmaps in chunks) plus `meta.json`.

    Use `RolloutStore.create(path, meta)` for a new store and `RolloutStore.open(path)` for an
    existing one. `data` concatenates every chunk in memory; `sample_sequences` reads only the
    rows it samples from the memory-mapped chunks.
    """

    def __init__(self, path: Path, meta: dict[str, Any], chunks: list[TensorDictBase]):
        """Internal: use `create` or `open`."""
        self.path = path
        self.meta = meta
        self._chunks = chunks
        self._table: dict[str, torch.Tensor] | None = None  # per-episode index, built lazily
        self._data: TensorDictBase | None = None

    # ---- creating and opening ----

    @classmethod
    def create(cls, path: str | Path, meta: dict[str, Any]) -> RolloutStore:
        """Make an empty store at `path` (which must not exist or be empty).

        `meta` needs at least `env_id` and `obs`; `size`, `frame_stack` and `action_space`
        (see `describe_space`) are recommended. `version` and `num_transitions` are filled in.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(
                f"cannot create rollout store '{path}': it already exists and is not empty; "
                f"open it with RolloutStore.open or choose a new path"
            )
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise UserError(f"rollout store meta is missing {missing}; pass them to create()")
        (path / "chunks").mkdir(parents=True, exist_ok=True)
        meta = {**meta, "version": STORE_VERSION, "num_transitions": 0}
        _write_json(path / "meta.json", meta)
        return cls(path, meta, [])

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        expect_env: str | None = None,
        expect_obs: str | None = None,
        expect_size: int | None = None,
        expect_frame_stack: int | None = None,
    ) -> RolloutStore:
        """Open the store at `path`; `expect_*` raise `UserError` early when the data does not fit."""
        path = Path(path)
        if not path.is_dir():
            raise UserError(
                f"rollout store '{path}' does not exist; collect rollouts first "
                f"(vjepa-collect) or check the path"
            )
        if not (path / "meta.json").is_file():
            raise UserError(
                f"'{path}' is not a rollout store (it has no meta.json); point to a folder "
                f"written by collect_rollouts"
            )
        try:
            meta = json.loads((path / "meta.json").read_text())
        except json.JSONDecodeError as e:
            raise UserError(
                f"the meta.json of rollout store '{path}' is not valid JSON ({e}); recollect the store"
            ) from None
        if meta.get("version", 0) > STORE_VERSION:
            raise UserError(
                f"rollout store '{path}' has format version {meta.get('version')} but this "
                f"vjepa_agent reads up to {STORE_VERSION}; upgrade vjepa_agent"
            )
        collected = f"{meta.get('env_id')} ({meta.get('obs')})"
        want_env, want_obs = expect_env or meta.get("env_id"), expect_obs or meta.get("obs")
        if (want_env, want_obs) != (meta.get("env_id"), meta.get("obs")):
            raise UserError(
                f"rollout store {path} was collected on {collected} but {want_env} ({want_obs}) "
                f"was requested; collect rollouts for it or point to a matching store"
            )
        for key, want in (("size", expect_size), ("frame_stack", expect_frame_stack)):
            have = meta.get(key)
            same = _frame_size(have) == _frame_size(want) if key == "size" else have == want
            if want is not None and have is not None and not same:
                raise UserError(
                    f"rollout store {path} was collected on {collected} with {key}={have} but "
                    f"{key}={want} was requested; collect rollouts with {key}={want} or use {have}"
                )
        chunk_dirs = sorted(p for p in (path / "chunks").glob("[0-9]*") if p.is_dir())
        chunks = [TensorDict.load_memmap(p) for p in chunk_dirs]
        return cls(path, meta, chunks)

    # ---- writing ----

    @property
    def next_episode_id(self) -> int:
        """The smallest episode id not yet used in the store."""
        table = self._episode_table()
        return int(table["id"].max()) + 1 if len(table["id"]) else 0

    def append(self, td: TensorDictBase) -> None:
        """Write `td` (batch size [N], keys as in the module docstring) as a new chunk.

        Each episode's rows must be contiguous and in step order. If `td`'s episode ids overlap
        ids already in the store, they are shifted by a constant so they stay unique (the
        caller's `td` is not modified); `collect_rollouts` numbers them from `next_episode_id`.
        """
        if td.batch_dims != 1:
            raise UserError(f"append() needs a TensorDict with batch size [N], got {td.batch_size}")
        if len(td) == 0:
            return
        if "episode" not in td.keys() or "step" not in td.keys():
            raise UserError("append() needs 'episode' and 'step' columns in the TensorDict")
        if self._chunks:
            have = set(self._chunks[0].keys(include_nested=True, leaves_only=True))
            got = set(td.keys(include_nested=True, leaves_only=True))
            if have != got:
                raise UserError(
                    f"append() got keys {sorted(map(str, got))} but store '{self.path}' holds "
                    f"{sorted(map(str, have))}; append data collected the same way"
                )
        ids, _ = _episode_runs(td["episode"])
        if len(torch.unique(ids)) != len(ids):
            raise UserError(
                "append() needs each episode's transitions contiguous; sort by (episode, step) first"
            )
        first = int(td["episode"].min())
        if len(self) and first < self.next_episode_id:
            td = td.clone()
            td["episode"] += self.next_episode_id - first

        # Write to a temporary folder and rename, so a crash never leaves half a chunk.
        index = len(self._chunks)
        final = self.path / "chunks" / f"{index:05d}"
        tmp = self.path / "chunks" / f".tmp-{index:05d}"
        if tmp.exists():
            shutil.rmtree(tmp)
        td.detach().cpu().memmap(tmp)
        os.rename(tmp, final)
        self._chunks.append(TensorDict.load_memmap(final))
        self._table = None
        self._data = None
        self.meta["num_transitions"] = len(self)
        _write_json(self.path / "meta.json", self.meta)

    # ---- reading ----

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks)

    @property
    def chunks(self) -> tuple[TensorDictBase, ...]:
        """The memory-mapped chunks in row order (one per `append`), read without copying: rows
        of chunk i follow those of chunk i - 1 in `data` and in the global row indices."""
        return tuple(self._chunks)

    def __repr__(self) -> str:
        return (
            f"RolloutStore('{self.path}', env={self.meta.get('env_id')}, obs={self.meta.get('obs')}, "
            f"transitions={len(self)}, episodes={len(self._episode_table()['id'])}, "
            f"chunks={len(self._chunks)})"
        )

    @property
    def data(self) -> TensorDictBase:
        """Every transition, all chunks concatenated in memory, batch size [N] (cached)."""
        if self._data is None:
            if not self._chunks:
                raise UserError(
                    f"rollout store '{self.path}' is empty; collect rollouts into it first"
                )
            self._data = torch.cat(list(self._chunks), dim=0)  # copies into memory
        return self._data

    def episodes(self) -> list[Episode]:
        """Every episode as (id, start, length), in the row order of `data`."""
        t = self._episode_table()
        return [
            Episode(int(i), int(s), int(n))
            for i, s, n in zip(t["id"], t["global_start"], t["length"])
        ]

    def episode_indices(self, episode_ids: torch.Tensor | list[int]) -> torch.Tensor:
        """Row indices into `data` of the given episodes, (N_sel,) int64 in row order."""
        t = self._episode_table()
        keep = torch.isin(t["id"], torch.as_tensor(episode_ids, dtype=torch.long))
        ranges = [
            torch.arange(s, s + n) for s, n in zip(t["global_start"][keep], t["length"][keep])
        ]
        return torch.cat(ranges) if ranges else torch.zeros(0, dtype=torch.long)

    def steps_to_termination(self) -> torch.Tensor:
        """(N,) float32 in the row order of `data`: transitions from each row to its episode's
        terminal one (0 on the terminal transition itself), inf in episodes that do not terminate
        (truncated, or cut by the end of a collection). Computed once per store."""
        t = self._episode_table()
        if "steps_to_termination" not in t:
            length = t["length"]
            end = torch.repeat_interleave(t["global_start"] + length - 1, length)  # (N,)
            k = (end - torch.arange(len(end))).float()
            ended = torch.repeat_interleave(self._ends_terminated(), length)
            t["steps_to_termination"] = torch.where(ended, k, torch.tensor(float("inf")))
        return t["steps_to_termination"]

    def split_episodes(
        self, fraction_holdout: float, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Split episode ids at random into (train_ids, holdout_ids), each sorted, int64.

        At least one episode is held out when `fraction_holdout > 0`; pass the ids to
        `sample_sequences(episodes=...)` or `episode_indices`.
        """
        if not 0.0 <= fraction_holdout < 1.0:
            raise UserError(f"fraction_holdout must be in [0, 1), got {fraction_holdout}")
        ids = self._episode_table()["id"]
        n_hold = 0 if fraction_holdout == 0 else max(1, round(fraction_holdout * len(ids)))
        if n_hold >= len(ids) and n_hold > 0:
            raise UserError(
                f"rollout store '{self.path}' has {len(ids)} episode(s), too few to hold out "
                f"{fraction_holdout:.0%} and still train; collect more episodes or lower the fraction"
            )
        perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
        holdout = ids[perm[:n_hold]].sort().values
        train = ids[perm[n_hold:]].sort().values
        return train, holdout

    def sample_sequences(
        self,
        batch_size: int,
        seq_len: int,
        generator: torch.Generator | None = None,
        episodes: torch.Tensor | list[int] | None = None,
    ) -> TensorDictBase:
        """Sample `batch_size` windows of `seq_len` consecutive transitions, batch size (B, T).

        Every window lies inside one episode (never across a reset), uniformly over all valid
        windows (so longer episodes are sampled more). `"prev_action"` (B, T[, A]) is the action taken
        before each row; it is meaningless where `"step"` is 0 (nothing came before a reset).
        `"steps_to_termination"` (B, T) is that of `steps_to_termination()`. `episodes` restricts
        sampling to those episode ids (e.g. the train ids of `split_episodes`).
        """
        if seq_len < 1 or batch_size < 1:
            raise UserError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}")
        t = self._episode_table()
        keep = torch.ones_like(t["id"], dtype=torch.bool)
        if episodes is not None:
            keep = torch.isin(t["id"], torch.as_tensor(episodes, dtype=torch.long))
        windows = ((t["length"] - seq_len + 1).clamp(min=0)) * keep  # (E,) valid starts
        cum = windows.cumsum(0)
        total = int(cum[-1]) if len(cum) else 0
        if total == 0:
            raise UserError(
                f"no episode in rollout store '{self.path}' has {seq_len} transitions; use a "
                f"shorter seq_len or collect longer episodes"
            )
        # Step 1: pick windows uniformly, then the episode each falls in and its offset there.
        r = torch.randint(total, (batch_size,), generator=generator)
        e = torch.searchsorted(cum, r, right=True)  # (B,) episode row in the table
        offset = r - (cum[e] - windows[e])
        start = t["local_start"][e] + offset
        idx = start[:, None] + torch.arange(seq_len)  # (B, T) rows within the chunk
        # Step 2: gather per chunk from the memmaps, then restore the sampled order.
        chunk = t["chunk"][e]
        rows = (t["global_start"][e] + offset)[:, None] + torch.arange(seq_len)  # (B, T) in data
        parts, order = [], []
        for c in torch.unique(chunk).tolist():
            sel = (chunk == c).nonzero().squeeze(1)
            parts.append(self._chunks[c][idx[sel]])
            order.append(sel)
            # the action taken before each row (meaningless where step == 0: nothing came before)
            parts[-1]["prev_action"] = torch.as_tensor(
                self._chunks[c]["action"][(idx[sel] - 1).clamp(min=0)]
            )
        out = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            out = out[torch.argsort(torch.cat(order))]
        out["steps_to_termination"] = self.steps_to_termination()[rows]
        return out

    def write_videos(self, video_dir: str | Path, fps: int = 20) -> list[Path]:
        """Write every episode's frames as `video_dir/episode_XXXXXX.mp4` (pixel stores only)."""
        return write_episode_videos(self.data, video_dir, fps)

    # ---- helpers ----

    def _ends_terminated(self) -> torch.Tensor:
        """(E,) bool per row of the episode table: the episode's last transition is terminal."""
        t = self._episode_table()
        if "ends_terminated" not in t:
            out = torch.zeros(len(t["id"]), dtype=torch.bool)
            last = t["local_start"] + t["length"] - 1
            for c, chunk in enumerate(self._chunks):
                sel = t["chunk"] == c
                out[sel] = torch.as_tensor(chunk["next", "terminated"][last[sel]]).reshape(-1)
            t["ends_terminated"] = out
        return t["ends_terminated"]

    def _episode_table(self) -> dict[str, torch.Tensor]:
        """Per-episode (E,) tensors: id, chunk, local_start, global_start, length."""
        if self._table is None:
            cols: dict[str, list[torch.Tensor]] = {
                k: [] for k in ("id", "chunk", "local_start", "length")
            }
            for c, chunk in enumerate(self._chunks):
                ids, counts = _episode_runs(torch.as_tensor(chunk["episode"]))
                cols["id"].append(ids)
                cols["chunk"].append(torch.full_like(ids, c))
                cols["local_start"].append(counts.cumsum(0) - counts)
                cols["length"].append(counts)
            table = {
                k: torch.cat(v) if v else torch.zeros(0, dtype=torch.long) for k, v in cols.items()
            }
            table["global_start"] = table["length"].cumsum(0) - table["length"]
            self._table = table
        return self._table


def write_episode_videos(td: TensorDictBase, video_dir: str | Path, fps: int = 20) -> list[Path]:
    """Write each episode of `td` (batch [N], pixel keys) as an mp4 of its newest frames.

    An episode of L transitions gives L + 1 frames: the last frame of each `"pixels"` stack
    and of the final `("next", "pixels")`. Grayscale is written as RGB. Returns the paths.
    """
    from vjepa_agent.data.video import write_mp4

    if "pixels" not in td.keys():
        raise UserError("writing videos needs pixel observations; collect with obs='pixels'")
    video_dir = Path(video_dir)
    video_dir.mkdir(parents=True, exist_ok=True)
    ids, counts = _episode_runs(td["episode"])
    paths, start = [], 0
    for ep, n in zip(ids.tolist(), counts.tolist()):
        pixels = td["pixels"][start : start + n, :, -1]  # (L, C, H, W): newest frame of each stack
        last = td["next", "pixels"][start + n - 1, :, -1][None]  # (1, C, H, W)
        frames = torch.cat([pixels, last]).permute(0, 2, 3, 1)  # (L + 1, H, W, C)
        if frames.shape[-1] == 1:
            frames = frames.expand(-1, -1, -1, 3)
        path = video_dir / f"episode_{ep:06d}.mp4"
        write_mp4(path, frames.contiguous().numpy(), fps)
        paths.append(path)
        start += n
    return paths


class RolloutClipDataset(torch.utils.data.Dataset):
    """A pixel rollout store as a video source for `pretrain_video.py --data STORE`.

    Item i is the clip of `frames_per_clip` consecutive frames (the newest frame of each of
    consecutive observations) of the i-th valid window inside an episode, as float (C, T, H, W)
    normalised like the video datasets; `crop_size` resizes. Same item interface as
    `vjepa_agent.data.video` (`set_epoch`, dict items); clips are fixed, so epochs change nothing.
    """

    def __init__(self, path: str | Path, frames_per_clip: int = 8, crop_size: int | None = None):
        from vjepa_agent.data.video import IMAGENET_MEAN, IMAGENET_STD

        self.store = RolloutStore.open(path)
        if self.store.meta.get("obs") != "pixels":
            raise UserError(
                f"rollout store '{path}' holds state observations; video pretraining needs pixels"
            )
        self.frames, self.crop_size = frames_per_clip, crop_size
        starts = []
        for e in self.store.episodes():
            starts += range(e.start, e.start + max(0, e.length - frames_per_clip + 1))
        if not starts:
            raise UserError(
                f"no episode in rollout store '{path}' has {frames_per_clip} steps; lower --frames-per-clip"
            )
        self.starts = torch.tensor(starts)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
        offsets = [0]
        for chunk in self.store.chunks:
            offsets.append(offsets[-1] + chunk.batch_size[0])
        self.offsets = offsets

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch.nn.functional as F

        row = int(self.starts[i])
        c = bisect.bisect_right(self.offsets, row) - 1  # the chunk holding this row
        local = row - self.offsets[c]
        pixels = torch.as_tensor(
            self.store.chunks[c]["pixels"][local : local + self.frames]
        )  # (T, C, Tf, H, W)
        video = pixels[:, :, -1].permute(1, 0, 2, 3).float() / 255.0  # (C, T, H, W)
        if video.shape[0] == 1:
            video = video.expand(3, -1, -1, -1)
        if self.crop_size is not None and video.shape[-1] != self.crop_size:
            video = F.interpolate(
                video, size=(self.crop_size, self.crop_size), mode="bilinear", antialias=True
            )
        return {
            "video": (video - self.mean) / self.std,
            "label": -1,
            "index": int(i),
            "skipped": [],
        }


def _frame_size(size) -> tuple[int, int] | None:
    """A frame size as (height, width): 64, (16, 256) and meta.json's [16, 256] compare alike."""
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else tuple(int(v) for v in size)
