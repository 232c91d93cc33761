"""A training run's state as one safetensors file: the trainable weights, AdamW's moments, the step and the
elapsed time (loading it never runs code, unlike a pickle)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_state(path: Path, model, optimizer, step: int, elapsed: float) -> None:
    """Trainable weights and AdamW's state as safetensors (loading never runs code)."""
    tensors = {f"weights/{n}": v for n, v in trainable_state(model).items()}
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for slot, value in slots.items():
            tensors[f"optimizer/{index}/{slot}"] = value.detach().cpu().contiguous()
    meta = {"step": str(step), "elapsed": str(elapsed), "param_groups": json.dumps(opt["param_groups"])}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def saved_step(path: Path) -> int:
    """The step a state file was saved at, from its header alone (no tensor is read)."""
    return int(_read(path, tensors=False)[0]["step"])


def _read(path: Path, tensors: bool = True) -> tuple[dict, dict]:
    """(header metadata, tensors) of a state file; a truncated or foreign file is one error that names it."""
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata()
        return meta, (load_file(path) if tensors else {})
    except Exception as error:  # safetensors' own error type for a truncated or foreign file
        raise ValueError(f"{path}: not a readable training state ({type(error).__name__}: {error}); move it away "
                         f"to resume from the last stage boundary kept beside it, or pass --fresh to start over") \
            from None


def read_state(path: Path) -> dict:
    meta, tensors = _read(path)
    weights = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("weights/")}
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, slot = key.split("/")
            state.setdefault(int(index), {})[slot] = value
    optimizer = {"state": state, "param_groups": json.loads(meta["param_groups"])}
    return {"step": int(meta["step"]), "elapsed": float(meta["elapsed"]), "weights": weights,
            "optimizer": optimizer}


def drop_rows_after(log_file: Path, step: int, stages: tuple) -> None:
    """Remove the rows of ``stages`` (None: the loss rows of stages 1-2, which carry no stage) logged after
    ``step``: a run killed between two saves resumes from the last one and logs those steps again."""
    if not log_file.exists():
        return
    kept = []
    for line in log_file.read_text().splitlines(keepends=True):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the tail of a killed write
            continue
        inner = row.get("monitor", row)
        if inner.get("stage") in stages and inner.get("step", 0) > step:
            continue
        kept.append(line)
    log_file.write_text("".join(kept))
