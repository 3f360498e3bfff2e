"""A large run's checkpoint: everything needed to go on from the last round, without pickle.

    OUT/checkpoint/model.npz       the model's state dict as plain arrays
    OUT/checkpoint/optimizer.npz   AdamW's state, keyed "<parameter name>::<field>"
    OUT/checkpoint/mixer.json      the mixer's state (mixopt.online.load reads it)
    OUT/checkpoint/source.json     the batch source's state (step, weights, random streams)
    OUT/checkpoint/meta.json       domains, steps, the step reached and the seconds spent

Each file is written atomically; meta.json goes last, so a checkpoint with a meta.json is whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mixopt.errors import InputError
from mixopt.io import atomic_write, atomic_write_json

CHECKPOINT_DIR = "checkpoint"


def exists(ckpt: Path) -> bool:
    return (ckpt / "meta.json").exists()


def save(ckpt: Path, model, optimizer, names: dict, mixer, source, domains: Sequence[str], steps: int, step: int,
         seconds: float) -> None:
    """Write the checkpoint of a run at `step` (names: parameter -> its name in the state dict)."""
    ckpt.mkdir(parents=True, exist_ok=True)
    _save_npz(ckpt / "model.npz", {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    _save_npz(ckpt / "optimizer.npz", _optimizer_arrays(optimizer, names))
    atomic_write_json(ckpt / "mixer.json", mixer.state_dict())
    atomic_write_json(ckpt / "source.json", source.state_dict())
    atomic_write_json(ckpt / "meta.json", {"domains": list(domains), "steps": steps, "step": step, "seconds": seconds})


def load(ckpt: Path, model, optimizer, names: dict, source, domains: Sequence[str], steps: int):
    """Restore the model, the optimizer and the batch source of a checkpoint written for the same
    domains and steps; returns (the saved mixer, the step reached, the seconds spent)."""
    import torch

    from mixopt import online

    meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    if meta.get("domains") != list(domains) or meta.get("steps") != steps:
        raise InputError(f"{ckpt.parent}: holds a checkpoint of another run (domains or steps differ); use a new --out")
    with np.load(ckpt / "model.npz") as arrays:
        model.load_state_dict({k: torch.from_numpy(np.array(arrays[k])) for k in arrays.files})
    with np.load(ckpt / "optimizer.npz") as arrays:
        by_name = {name: param for param, name in names.items()}
        for key in arrays.files:
            name, field = key.split("::")
            optimizer.state[by_name[name]][field] = torch.from_numpy(np.array(arrays[key]))
    mixer = online.load(ckpt / "mixer.json")
    source.load_state_dict(json.loads((ckpt / "source.json").read_text(encoding="utf-8")))
    return mixer, int(meta["step"]), float(meta["seconds"])


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    atomic_write(path, write)


def _optimizer_arrays(optimizer, names: dict) -> dict[str, np.ndarray]:
    arrays = {}
    for param, state in optimizer.state.items():
        name = names[param]
        for key, value in state.items():
            arrays[f"{name}::{key}"] = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    return arrays
