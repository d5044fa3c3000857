"""Helpers shared by the demo's training scripts (:mod:`.train` for the classifier and the command
line, :mod:`.clip_train` for the CLIP): a timestamped log line and the fp16 safetensors writer."""
from __future__ import annotations

import time
from pathlib import Path

import torch

__all__ = ["log", "save_fp16"]


def log(msg: str) -> None:
    """Print ``msg`` with the time of day (training progress)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def save_fp16(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write a state dict as safetensors, floating tensors in fp16."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    out = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().cpu() for k, v in state.items()}
    save_file(out, str(path))
