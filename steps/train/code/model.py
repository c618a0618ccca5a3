"""The digits classifier: a small MLP over the 64 pixel values (0..16), shipped beside the weights."""

from __future__ import annotations

import torch
from torch import nn

PIXEL_MAX = 16.0


class DigitsMLP(nn.Module):
    """Two hidden layers; scales pixels to [0, 1] itself so callers pass raw CSV values."""

    def __init__(self, input_size: int = 64, hidden_units: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_size, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, num_classes),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels / PIXEL_MAX)


def build_model(config: dict) -> DigitsMLP:
    """Rebuild the model from ``model_config.json``'s contents."""
    return DigitsMLP(config["input_size"], config["hidden_units"], config["num_classes"])
