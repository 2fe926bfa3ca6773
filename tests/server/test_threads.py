"""The server's torch thread count: half the cores, at least 2 (1 on one core)."""

import pytest
import torch

from mecca.errors import ConfigError
from mecca.server import settings


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (4, 2), (8, 4)])
def test_default_threads_follow_the_cores(monkeypatch, cores, expected):
    before = torch.get_num_threads()
    monkeypatch.setattr(settings.os, "cpu_count", lambda: cores)
    try:
        assert settings.use_server_threads() == expected == torch.get_num_threads()
        assert settings.use_server_threads(3) == 3
        with pytest.raises(ConfigError):
            settings.use_server_threads(0)
    finally:
        torch.set_num_threads(before)
