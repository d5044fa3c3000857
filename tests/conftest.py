"""Shared pytest configuration (owned by the lead; put fixtures in your own test modules)."""
import os

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")  # keep CI logs readable; progress bars are tested explicitly


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same torch/numpy RNG state."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    yield
