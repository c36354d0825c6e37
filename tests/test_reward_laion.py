"""The LAION aesthetic heads load exactly: the rebuilt Sequential reproduces the original nn.Sequential."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from prefs.errors import UserError
from reward.fit import FitConfig
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


def fake_laion(path: Path) -> Path:
    """A LAION-format head (linearMSE layout, layers.{0,2,4,6,7}, 768-1024-128-64-16-1) with random weights."""
    torch.manual_seed(0)
    torch.save(OriginalMLP().state_dict(), path)
    return path


def test_fit_from_a_laion_prior_starts_at_it_and_round_trips(tmp_path):
    import numpy as np

    import reward
    from reward.fit import fit_ensemble
    from reward.heads import LaionPriorHead
    from reward.model import save_weights
    from reward.versions import write_version

    path = fake_laion(tmp_path / "prior.pth")
    prior = load_laion(path)
    prior.path = str(path)
    rng = np.random.default_rng(0)
    x = torch.nn.functional.normalize(torch.randn(30, 768, generator=torch.Generator().manual_seed(0)), dim=-1)
    ia, ib = rng.integers(0, 25, 60), rng.integers(25, 30, 60)  # images 25..29 are used, 0..24 are not
    y = rng.choice([0.0, 0.5, 1.0], 60).astype(np.float32)
    with torch.no_grad():
        before = prior(x)
    used = np.unique(np.concatenate([ia, ib]))

    start = fit_ensemble(x.numpy(), ia, ib, y, FitConfig(ensemble=2, steps=0), prior=prior)
    for head in start.heads:  # no steps: the prior's outputs, centred on the images judged
        assert isinstance(head, LaionPriorHead) and head.prior_path == str(path)
        with torch.no_grad():
            torch.testing.assert_close(head(x), before - before[used].mean(), atol=1e-5, rtol=0)
    assert len(start.train_loss) == 2 and all(np.isfinite(start.train_loss))

    fitted = fit_ensemble(x.numpy(), ia, ib, y, FitConfig(ensemble=2, steps=5), prior=prior)
    with torch.no_grad():
        assert not torch.allclose(fitted.heads[0](x), start.heads[0](x), atol=1e-6)  # it learnt
        assert torch.equal(prior(x), before)  # from a copy: the prior itself is untouched
        want = torch.stack([h(x) for h in fitted.heads])
    meta = {"clip_spec": "a-768-d-clip", "heads": [h.config for h in fitted.heads], "config": {"head": "laion"}}
    folder = write_version(meta, lambda p: save_weights(p, fitted.heads))
    model = reward.load(folder.name)
    assert all(isinstance(h, LaionPriorHead) for h in model.heads) and model.members == 2
    with torch.no_grad():
        assert torch.equal(model.member_scores(x), want)


def test_steps_must_be_a_whole_number_at_least_zero():
    with pytest.raises(UserError, match="--steps must be a whole number >= 0"):
        FitConfig(steps=-1)


def test_training_with_a_laion_prior_reports_it_as_a_baseline(tmp_path):
    from reward_util import judged_store, tiny_clip_folder

    import reward
    from reward.training import RewardTrainConfig

    clip = str(tiny_clip_folder(tmp_path / "clip768", 768))
    prior = f"laion:{fake_laion(tmp_path / 'prior.pth')}"
    zero = FitConfig(ensemble=2, steps=0)
    with judged_store(n_images=20, n_judgements=60) as store:
        m = reward.train(store, RewardTrainConfig(clip=clip, prior=prior, fit=zero), progress=False).metrics
        plain = reward.train(store, RewardTrainConfig(clip=clip, fit=zero), progress=False).metrics
    base = m["baselines"]["laion_prior"]
    assert base["n"] == m["n_val"] == 12
    # No steps: the reward is the prior, so it scores the held-out pairs exactly as the baseline does.
    assert base["accuracy"] == m["val_accuracy"] and base["log_loss"] == pytest.approx(m["val_log_loss"], abs=1e-6)
    assert "laion_prior" not in plain["baselines"]
    assert reward.load("r0001").metadata["config"]["head"] == "laion"
