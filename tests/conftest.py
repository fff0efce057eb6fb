"""Fixtures only (shared helpers: ``tests/helpers/``): deterministic seeds keep the CPU suite reproducible."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
