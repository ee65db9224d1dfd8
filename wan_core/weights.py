"""Assigning loaded tensors to a model built on the meta device (shared by every loader)."""

from __future__ import annotations

import logging
from typing import Dict

import torch
from torch import nn

from .errors import ModelLayoutError

log = logging.getLogger(__name__)


def assign_parameters(model: nn.Module, tensors: Dict[str, torch.Tensor], source: str) -> None:
    """Assign ``{name: tensor}`` to the model's parameters; every parameter must be present."""
    expected = set(model.state_dict().keys())
    missing = sorted(expected - set(tensors))
    if missing:
        family = getattr(getattr(model, "config", None), "family", type(model).__name__)
        raise ModelLayoutError(
            f"{source} lacks {len(missing)} tensors the detected {family} needs, e.g. {missing[:4]}; "
            "the file is incomplete or from another model."
        )
    unexpected = sorted(set(tensors) - expected)
    if unexpected:
        log.warning("%s: ignoring %d tensors not used by the model, e.g. %s", source, len(unexpected), unexpected[:4])
    model.load_state_dict({k: tensors[k] for k in expected}, strict=True, assign=True)
