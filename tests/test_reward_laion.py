"""The LAION aesthetic heads load exactly: the rebuilt Sequential reproduces the original nn.Sequential."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from prefs.errors import UserError
from reward.laion import load_laion, parse_prior

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "laion-aesthetic"
FILES = sorted(DATA.glob("*.pth")) if DATA.is_dir() else []


class OriginalMLP(nn.Module):
    """improved-aesthetic-predictor's MLP (simple_inference.py), verbatim layer layout."""

    def __init__(self, input_size=768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


class OriginalReluMLP(nn.Module):
    """The ReLU variant (ava+logos-l14-reluMSE.pth)."""

    def __init__(self, input_size=768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1024, 128), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


@pytest.mark.skipif(len(FILES) < 3, reason="shared LAION heads not present")
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_loaded_head_matches_original(path):
    sd = torch.load(path, map_location="cpu", weights_only=True)
    original = (OriginalReluMLP() if "relu" in path.name else OriginalMLP()).eval()
    original.load_state_dict(sd)
    head = load_laion(path)
    x = torch.nn.functional.normalize(torch.randn(16, 768), dim=-1)
    with torch.no_grad():
        assert torch.allclose(head(x), original(x).squeeze(-1), atol=1e-5)
    assert head.in_dim == 768
    assert sum(isinstance(m, nn.ReLU) for m in head.layers) == (4 if "relu" in path.name else 0)


def test_prior_spec_and_bad_files(tmp_path):
    assert parse_prior("laion:/x.pth") == "/x.pth" and parse_prior(None) is None
    with pytest.raises(UserError, match="laion:PATH"):
        parse_prior("imagereward:/x")
    with pytest.raises(UserError, match="no LAION"):
        load_laion(tmp_path / "missing.pth")
    torch.save({"fc.weight": torch.zeros(1, 2)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not a LAION"):
        load_laion(tmp_path / "bad.pth")
