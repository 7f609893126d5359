"""Exponential moving average of model weights."""
from __future__ import annotations

import copy
from typing import Any, Dict

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Keeps ``module``: a frozen copy of the model whose parameters track ``p_ema <- p_ema + (1-decay)(p - p_ema)``.

    ``update(model)`` after each optimiser step; buffers (e.g. BatchNorm statistics) are copied, not averaged.
    ``warmup=True`` uses ``min(decay, (1 + k)/(10 + k))`` at update k, so early averages are not dominated by the
    random initialisation. ``state_dict()/load_state_dict()`` restore it exactly (for resume).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        k = self.num_updates
        return min(self.decay, (1 + k) / (10 + k)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for pe, p in zip(self.module.parameters(), model.parameters()):
            pe.lerp_(p.detach(), 1.0 - d)
        for be, b in zip(self.module.buffers(), model.buffers()):
            be.copy_(b)
        self.num_updates += 1

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        model.load_state_dict(self.module.state_dict())

    def state_dict(self) -> Dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "weights": {k: v.detach().clone() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        self.module.load_state_dict(state["weights"])
