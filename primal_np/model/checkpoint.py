"""Training checkpoints: written atomically, read back with every field checked, never unpickled.

A checkpoint directory holds

    checkpoint.json                       format, step, the arrays file and its SHA-256, the
                                          model and training configs, the history so far,
                                          the losses of the open evaluation window, metrics
    checkpoint-<step>-<sha256[:16]>.npz   ``param/<name>`` and ``opt/<key>`` arrays

``checkpoint.json`` is the commit point. A save writes the new ``.npz`` under a new name
(temporary file in the same directory, fsync, ``os.replace``), then the new JSON (same),
and only then deletes the ``.npz`` the old JSON named. A crash at any moment therefore
leaves a JSON naming a complete ``.npz`` whose hash it records: the previous checkpoint or
the new one, never a mixture.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._files import OutputDirError, prepare_output_dir, sha256_file, write_atomic
from .config import ModelConfig
from .encoder import init_model_params
from .train_config import TrainConfig

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
    "check_writable_dir",
]

FORMAT = "primal_np checkpoint 1"
META = "checkpoint.json"
_ARRAYS = re.compile(r"checkpoint-\d+-[0-9a-f]{16}\.npz")
_TMP_PREFIX = ".checkpoint-tmp-"
# the fields of a history record (train._record) and their kinds; "kl" only with KEP-SVGP layers
_RECORD = {"step": int, "train_task_loss": float, "val_accuracy": float, "val_task_loss": float,
           "ksvd_loss": dict, "J": dict, "seconds": float}  # fmt: skip
_OPTIONAL = {"kl": dict}


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be read or written: ``path``, ``problem``, and
    ``role``: "resume" (reading one to continue from) or "checkpoint_dir" (writing)."""

    def __init__(self, path: object, problem: str, role: str = "resume"):
        self.path, self.problem, self.role = str(path), problem, role
        super().__init__(f"checkpoint {self.path}: {problem}")


class Checkpoint(NamedTuple):
    params: dict[str, np.ndarray]
    opt: dict[str, Any]  # Adam state: "step" (int), "m/<name>", "v/<name>"
    model_config: ModelConfig
    train_config: TrainConfig
    step: int  # optimiser updates taken
    history: list  # the evaluation records so far
    window: list  # training task losses since the last evaluation
    seconds: float  # training seconds so far
    metrics: dict


# --------------------------------------------------------------------------- writing
def check_writable_dir(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` if needed and prove that a file can be written into it."""
    try:
        return prepare_output_dir(directory)
    except OutputDirError as exc:
        raise CheckpointError(exc.path, exc.problem, role="checkpoint_dir") from None


def _write_atomic(d: Path, name: str, write) -> str:
    """``_files.write_atomic`` with the checkpoint's temporary-file prefix (so that an
    interrupted save's leftovers are recognised and cleared by the next save)."""
    return write_atomic(d, name, write, tmp_prefix=_TMP_PREFIX)


def save_checkpoint(
    directory: str | os.PathLike[str],
    params: Mapping[str, np.ndarray],
    opt_state: Mapping[str, Any],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    step: int,
    metrics: dict | None = None,
    *,
    history: list | None = None,
    window: list | None = None,
    seconds: float = 0.0,
) -> Path:
    """Write a checkpoint atomically (module docstring); returns the JSON's path.

    An ``OSError`` (disk full, permissions) becomes a ``CheckpointError``; the previous
    checkpoint of the directory is then intact."""
    d = Path(directory)
    arrays: dict[str, Any] = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    arrays.update({f"opt/{k}": np.asarray(v) for k, v in opt_state.items()})
    try:
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob(f"{_TMP_PREFIX}*.tmp"):  # left by an interrupted save
            stale.unlink(missing_ok=True)
        npz = f"checkpoint-{step:06d}-{{sha}}.npz"
        digest = _write_atomic(d, npz, lambda f: np.savez(f, **arrays))
        npz = npz.format(sha=digest[:16])
        meta = {
            "format": FORMAT,
            "step": int(step),
            "arrays": {"file": npz, "sha256": digest},
            "model_config": model_cfg.to_dict(),
            "train_config": asdict(train_cfg),
            "history": history or [],
            "window": [float(x) for x in window or []],
            "seconds": float(seconds),
            "metrics": metrics or {},
        }
        text = json.dumps(meta, indent=2, allow_nan=False) + "\n"
        _write_atomic(d, META, lambda f: f.write(text.encode()))
        for old in d.glob("checkpoint-*.npz"):  # the arrays no JSON names any more
            if old.name != npz and _ARRAYS.fullmatch(old.name):
                old.unlink(missing_ok=True)
    except OSError as exc:
        raise CheckpointError(
            d, f"could not be written: {exc.strerror or exc}", role="checkpoint_dir"
        ) from None
    return d / META


# --------------------------------------------------------------------------- reading
def _read_meta(d: Path) -> dict:
    if not d.exists():
        raise CheckpointError(d, "no such directory")
    if not d.is_dir():
        raise CheckpointError(d, "is not a directory (give the directory holding checkpoint.json)")
    path = d / META
    if not path.is_file():
        raise CheckpointError(d, f"has no {META}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(d, f"{META} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(d, f"{META} must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(d, f"{META}: format must be {FORMAT!r}, got {meta.get('format')!r}")
    kinds: dict[str, Any] = {"step": int, "arrays": dict, "model_config": dict, "train_config": dict,
             "history": list, "window": list, "seconds": (int, float), "metrics": dict}  # fmt: skip
    for key, kind in kinds.items():
        if key not in meta:
            raise CheckpointError(d, f"{META} lacks its {key!r} entry")
        if isinstance(meta[key], bool) or not isinstance(meta[key], kind):
            raise CheckpointError(d, f"{META}: {key!r} has the wrong type: {meta[key]!r:.80}")
    if meta["step"] < 0:
        raise CheckpointError(d, f"{META}: step must be >= 0, got {meta['step']}")
    if not all(_finite(x) for x in meta["window"]):
        raise CheckpointError(d, f"{META}: 'window' must hold finite numbers")
    for i, rec in enumerate(meta["history"]):
        if not _is_record(rec):
            raise CheckpointError(d, f"{META}: history[{i}] is not an evaluation record")
    return meta


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_record(rec: object) -> bool:
    """An entry of ``TrainResult.history``: step, losses, accuracy, per-layer dicts."""
    if not isinstance(rec, dict) or not set(_RECORD) <= set(rec) <= set(_RECORD) | set(_OPTIONAL):
        return False
    if not isinstance(rec["step"], int) or isinstance(rec["step"], bool):
        return False
    kinds = {**_RECORD, **_OPTIONAL}
    scalars = all(_finite(rec[k]) for k in rec if kinds[k] is float)
    dicts = all(
        isinstance(rec[k], dict) and all(_finite(v) for v in rec[k].values())
        for k in rec
        if kinds[k] is dict
    )
    return scalars and dicts


def _read_arrays(d: Path, meta: dict) -> dict[str, np.ndarray]:
    entry = meta["arrays"]
    name, digest = entry.get("file"), entry.get("sha256")
    if not (isinstance(name, str) and _ARRAYS.fullmatch(name)) or not isinstance(digest, str):
        raise CheckpointError(d, f"{META}: 'arrays' must name checkpoint-<step>-<hash>.npz "
                              f"and its sha256, got {entry!r:.120}")  # fmt: skip
    path = d / name
    if not path.is_file():
        raise CheckpointError(d, f"{name} (named by {META}) is missing")
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise CheckpointError(d, f"{name} cannot be read: {exc.strerror or exc}") from None
    if actual != digest:
        raise CheckpointError(d, f"{name} does not match the SHA-256 in {META} (truncated or "
                              "modified after it was written)")  # fmt: skip
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # zip, npy-header and pickle refusals alike
        raise CheckpointError(d, f"{name} cannot be read as .npz arrays ({exc})") from None


def _check_params(d: Path, params: dict, mcfg: ModelConfig) -> None:
    expected = init_model_params(mcfg)
    missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or extra:
        raise CheckpointError(d, f"parameters do not match its model config: missing "
                              f"{missing[:5]}, unexpected {extra[:5]}")  # fmt: skip
    for k, ref in expected.items():
        _check_array(d, f"param/{k}", params[k], ref)


def _check_array(d: Path, key: str, arr: np.ndarray, ref: np.ndarray) -> None:
    if arr.shape != ref.shape or arr.dtype != ref.dtype:
        raise CheckpointError(d, f"{key} is {arr.dtype}{list(arr.shape)}, expected "
                              f"{ref.dtype}{list(ref.shape)} for its model config")  # fmt: skip
    if not np.all(np.isfinite(arr)):
        raise CheckpointError(d, f"{key} holds NaN or infinity")


def _check_opt(d: Path, opt: dict, params: dict, step: int) -> None:
    want = {"step"} | {f"{mv}/{k}" for k in params for mv in ("m", "v")}
    missing, extra = sorted(want - set(opt)), sorted(set(opt) - want)
    if missing or extra:
        raise CheckpointError(d, f"optimizer state does not match the parameters: missing "
                              f"{missing[:5]}, unexpected {extra[:5]}")  # fmt: skip
    s = opt["step"]
    if s.shape != () or s.dtype.kind not in "iu" or int(s) != step:
        raise CheckpointError(d, f"optimizer step is {s!r}, expected {step} (the step in {META})")
    opt["step"] = int(s)
    for k in params:
        for mv in ("m", "v"):
            _check_array(d, f"opt/{mv}/{k}", opt[f"{mv}/{k}"], params[k])
        if np.any(opt[f"v/{k}"] < 0):
            raise CheckpointError(d, f"opt/v/{k} holds negative second moments")


def read_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint:
    """Everything ``save_checkpoint`` wrote, checked: the JSON (format, types, configs),
    the arrays file (present, its SHA-256, readable without pickle), every parameter's
    name, shape, dtype and finiteness against the model config, and the optimizer state
    against the parameters and the step. Any problem: ``CheckpointError`` naming it."""
    d = Path(directory)
    meta = _read_meta(d)
    try:
        mcfg = ModelConfig.from_dict(meta["model_config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(d, f"{META}: model_config: {exc}") from None
    try:
        tcfg = TrainConfig.from_dict(meta["train_config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(d, f"{META}: train_config: {exc}") from None
    arrays = _read_arrays(d, meta)
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
    opt = {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}
    odd = sorted(k for k in arrays if not k.startswith(("param/", "opt/")))
    if odd:
        raise CheckpointError(d, f"unexpected arrays {odd[:5]}")
    _check_params(d, params, mcfg)
    _check_opt(d, opt, params, meta["step"])
    return Checkpoint(params, opt, mcfg, tcfg, meta["step"], meta["history"],
                      [float(x) for x in meta["window"]], float(meta["seconds"]),
                      meta["metrics"])  # fmt: skip


def load_checkpoint(
    directory: str | os.PathLike[str],
) -> tuple[dict, dict, ModelConfig, TrainConfig, int]:
    """(params, optimizer state, model config, train config, step): ``read_checkpoint``'s
    first five fields."""
    c = read_checkpoint(directory)
    return c.params, c.opt, c.model_config, c.train_config, c.step


def config_differences(saved: ModelConfig, current: ModelConfig) -> list[str]:
    """``"name = saved (this run: current)"`` for every field that differs."""
    return [
        f"{f.name} = {getattr(saved, f.name)!r} (this run: {getattr(current, f.name)!r})"
        for f in fields(ModelConfig)
        if getattr(saved, f.name) != getattr(current, f.name)
    ]
