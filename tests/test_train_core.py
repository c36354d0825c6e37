"""Losses on hand-computed cases, config validation, the per-prompt stat tracker, the CLIP compatibility check."""

from __future__ import annotations

import json
import math

import pytest
import torch

from prefs.errors import UserError
from rlft.train import losses
from rlft.train.config import TrainConfig, diff, from_dict, from_saved
from rlft.train.rewards import check_compatible
from rlft.train.stats import PerPromptStatTracker


def test_ppo_loss_hand_computed():
    lp = torch.tensor([0.0, math.log(1.5)])
    loss, info = losses.ppo_loss(lp, torch.zeros(2), torch.tensor([1.0, -2.0]), clip_range=0.2, adv_clip_max=5.0)
    # ratios 1 and 1.5; per sample max(-A r, -A clip(r)) = max(-1, -1) and max(3, 2.4) -> mean(-1, 3) = 1
    assert loss.item() == pytest.approx(1.0)
    assert info["clipfrac"].item() == pytest.approx(0.5)
    assert info["approx_kl"].item() == pytest.approx(0.25 * math.log(1.5) ** 2)


def test_ppo_loss_clips_advantages():
    loss, _ = losses.ppo_loss(torch.zeros(1), torch.zeros(1), torch.tensor([10.0]), clip_range=1e-4, adv_clip_max=5.0)
    assert loss.item() == pytest.approx(-5.0)


def test_advantage_denoising_loss_by_hand():
    pred, target = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    target[1] *= 3.0 ** 0.5  # per-sample errors 1 and 3
    assert losses.advantage_denoising_loss(pred, target, torch.tensor([1.0, -1.0])).item() == pytest.approx(-1.0)
    assert losses.advantage_denoising_loss(pred, target, torch.tensor([0.5, 0.5])).item() == pytest.approx(1.0)


def test_clipped_advantage_denoising_loss_stops_samples_past_the_trust_region():
    pred, target = torch.zeros(4, 1, 2, 2, requires_grad=True), torch.ones(4, 1, 2, 2)  # every error 1
    w = torch.tensor([1.0, 1.0, -1.0, -1.0])
    # reference errors: sample 0 already 20% below the reference's (1 < 0.9 x 1.25), sample 1 inside;
    # sample 2 already 20% above (1 > 1.1 x 0.8), sample 3 inside
    ref = torch.tensor([1.25, 1.0, 0.8, 1.0])
    loss, active = losses.clipped_advantage_denoising_loss(pred, target, w, ref, clip_range=0.1)
    assert active.item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx((1.0 * 1 - 1.0 * 1) / 4)
    loss.backward()
    per_sample = pred.grad.abs().sum(dim=(1, 2, 3))
    assert per_sample[0] == 0 and per_sample[2] == 0 and per_sample[1] > 0 and per_sample[3] > 0
    # with a wide trust region it is advantage_denoising_loss
    wide, active = losses.clipped_advantage_denoising_loss(pred, target, w, ref, clip_range=0.9)
    assert active.item() == 1.0 and wide.item() == pytest.approx(losses.advantage_denoising_loss(pred, target, w).item())


def test_rwr_weights_exp_and_topk():
    w = losses.rwr_weights([0.0, math.log(2.0)], ["a", "a"], "exp", beta=1.0)
    torch.testing.assert_close(w, torch.tensor([2 / 3, 4 / 3]))
    w = losses.rwr_weights([1.0, 2.0, 3.0, 0.0], ["a", "a", "b", "b"], "topk", top_k=1)
    torch.testing.assert_close(w, torch.tensor([0.0, 2.0, 2.0, 0.0]))
    w = losses.rwr_weights([0.0, 100.0], ["a", "a"], "exp", beta=1.0, max_weight=1.5)
    assert w.max().item() <= 1.5 / 1.0 * 2 and w.mean().item() == pytest.approx(1.0)


def test_weighted_denoising_loss_hand_computed():
    loss = losses.weighted_denoising_loss(torch.zeros(2, 1), torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 3.0]))
    assert loss.item() == pytest.approx((1 * 1 + 3 * 4) / 4)


def test_dpo_loss_hand_computed():
    loss, info = losses.dpo_loss(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([1.5]), torch.tensor([1.5]), beta=2.0)
    # inside = -beta/2 * ((1 - 1.5) - (2 - 1.5)) = 1; loss = -log sigmoid(1)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))
    assert info["implicit_acc"].item() == 1.0


def test_stat_tracker_per_prompt_and_fallback():
    tr = PerPromptStatTracker(buffer_size=4, min_count=2)
    adv = tr.update(["a", "a", "b"], [1.0, 3.0, 10.0])
    assert adv[:2] == pytest.approx([-1.0, 1.0], abs=1e-5)  # own mean 2, std 1
    # "b" has one reward (< min_count): the batch's mean/std stand in
    batch = torch.tensor([1.0, 3.0, 10.0])
    assert adv[2] == pytest.approx(((10 - batch.mean()) / batch.std(unbiased=False)).item(), rel=1e-4)
    state = tr.state_dict()
    again = PerPromptStatTracker()
    again.load_state_dict(state)
    assert again.update(["a"], [2.0]).tolist() == tr.update(["a"], [2.0]).tolist()


def test_toy_defaults_per_algorithm_and_give_way_to_given_ones():
    from rlft.train.configure import build_config

    assert [TrainConfig.toy(algo=a).kl_weight for a in ("ddpo", "rwr", "dpo")] == [0.05, 1.0, 0.0]
    assert TrainConfig.toy(kl_weight=0.0).kl_weight == 0.0 and TrainConfig.toy(algo="rwr", kl_weight=0.2).kl_weight == 0.2
    ddpo, rwr = TrainConfig.toy().optim, TrainConfig.toy(algo="rwr").optim
    assert (ddpo.learning_rate, ddpo.gradient_accumulation_steps) == (3e-3, 4) and (rwr.learning_rate, rwr.gradient_accumulation_steps) == (1e-3, 1)
    assert (ddpo.inner_epochs, rwr.inner_epochs) == (1, 1)
    awm = TrainConfig.toy(algo="rwr").rwr  # advantage-weighted matching: group advantages at a shared noise draw
    assert (awm.weighting, awm.group_advantages, awm.shared_noise) == ("advantage", True, True)
    given = TrainConfig.toy(optim={"learning_rate": 1e-4}).optim  # a given value wins, the rest of the section stays
    assert (given.learning_rate, given.gradient_accumulation_steps) == (1e-4, 4)
    assert build_config("toy", {}, {"algo": "rwr"}).kl_weight == 1.0
    assert build_config("toy", {"algo": "rwr"}, {}).kl_weight == 1.0
    assert build_config("toy", {"algo": "rwr", "kl_weight": 0.0}, {}).kl_weight == 0.0
    assert build_config("toy", {"algo": "rwr"}, {"kl_weight": 0.5}).kl_weight == 0.5
    assert build_config("toy", {}, {}).kl_weight == 0.05 and build_config("toy", {}, {"algo": "dpo"}).kl_weight == 0.0
    with pytest.raises(UserError, match="ddpo, rwr, dpo"):
        TrainConfig.toy(algo="ppo")


def test_config_defaults_and_validation():
    assert TrainConfig.toy().sample.steps == 10 and TrainConfig.sd().sample.steps == 50
    assert TrainConfig.sd().optim.gradient_checkpointing and TrainConfig.sd().dpo.beta == 5000.0
    cfg = from_dict({"ddpo.clip_range": 2e-4, "sample": {"guidance": 5.0}})
    assert cfg.ddpo.clip_range == 2e-4 and cfg.sample.guidance == 5.0 and cfg.sample.steps == 10
    assert diff(TrainConfig(), cfg) == ["ddpo.clip_range (0.0001 -> 0.0002)", "sample.guidance (3.0 -> 5.0)"]
    for bad, match in [({"algo": "ppo"}, "ddpo, rwr, dpo"), ({"epochs": 0}, "epochs"), ({"sample.eta": 0.0}, "eta"),
                       ({"optim.mixed_precision": "fp8"}, "bf16"), ({"lora.rank": -1}, "rank"),
                       ({"nope": 1}, "valid"), ({"rwr.weighting": "soft"}, "advantage, nft, exp, topk"), ({"ddpo.bogus": 1}, "clip_range"),
                       ({"rwr.guided_loss": "no"}, "true or false"), ({"ddpo.timestep_choice": "last"}, "random or first"),
                       ({"ddpo.discount": 0.0}, "discount must be a number > 0.0 and <= 1.0"), ({"ddpo.discount": 1.5}, "discount"),
                       ({"rwr.min_timestep": 1.0}, "below 1"), ({"dpo.min_timestep": -0.1}, "dpo.min_timestep must"),
                       ({"rwr.shared_noise": 1}, "rwr.shared_noise must be true or false"),
                       ({"rwr.clip_range": 1.0}, "rwr.clip_range must be a number >= 0.0 and below 1.0"),
                       ({"rwr.clip_range": 0.1, "rwr.weighting": "exp", "rwr.baseline": False}, "rwr.clip_range bounds the signed"),
                       ({"rwr.clip_range": 0.1, "rwr.weighting": "nft"}, "nft bounds its own"),
                       ({"rwr.nft_beta": 0.0}, "rwr.nft_beta must be a number > 0.0"),
                       ({"rwr.adv_clip_max": -1.0}, "rwr.adv_clip_max must be"),
                       ({"rwr.group_advantages": "yes"}, "rwr.group_advantages must be true or false"),
                       ({"ddpo.group_advantages": 1}, "ddpo.group_advantages must be true or false")]:
        with pytest.raises(UserError, match=match):
            from_dict(bad)
    assert from_dict(TrainConfig.sd().to_dict()) == TrainConfig.sd()


def test_a_run_saved_before_a_field_existed_resumes_as_it_started():
    saved = TrainConfig.toy(algo="rwr").to_dict()
    del saved["rwr"]["guided_loss"]  # config.json of a run written before rwr fitted the guided prediction
    assert from_saved(saved).rwr.guided_loss is False and TrainConfig.toy(algo="rwr").rwr.guided_loss is True
    assert from_saved(TrainConfig.toy(algo="rwr").to_dict()) == TrainConfig.toy(algo="rwr")
    saved = TrainConfig.toy(algo="rwr", rwr={"weighting": "exp", "shared_noise": False}).to_dict()
    del saved["rwr"]["group_advantages"]  # an exp-weighted run from before group advantages: the running stats
    assert from_saved(saved).rwr.group_advantages is False and TrainConfig.toy(algo="rwr").rwr.group_advantages
    saved = TrainConfig.toy(algo="ddpo").to_dict()
    del saved["ddpo"]["timestep_choice"]  # a ddpo run from before it trained the first steps
    assert from_saved(saved).ddpo.timestep_choice == "random" and TrainConfig.toy().ddpo.timestep_choice == "first"
    assert TrainConfig.sd().ddpo.timestep_choice == "random"  # ddpo-pytorch's: every step (timestep_fraction 1)


def test_config_errors_name_the_exact_key():
    for bad, message in [({"sample": {"batch_size": 0}}, "sample.batch_size must be a whole number >= 1, got 0"),
                         ({"optim.mixed_precision": "fp8"}, "optim.mixed_precision must be one of no, fp16, bf16"),
                         ({"lora": {"target_modules": []}}, "lora.target_modules must name at least one module"),
                         ({"rwr.mix_top_rated": -1}, "rwr.mix_top_rated must be a whole number >= 0"),
                         ({"dpo.beta": 0}, "dpo.beta must be a number > 0.0"),
                         ({"algo": "ppo"}, "algo must be one of: ddpo, rwr, dpo, grpo, got 'ppo'"),
                         ({"nope.x": 1}, "unknown config field nope.x; valid: algo,"),
                         ({"ddpo": {"bogus": 1}}, "unknown config field ddpo.bogus; DDPOConfig has:")]:
        with pytest.raises(UserError) as e:
            from_dict(bad)
        assert str(e.value).startswith(message), (bad, str(e.value))


def test_dpo_rater_is_gone_refused_in_a_config_and_dropped_from_saved_runs(tmp_path):
    from rlft.train.configure import read_config_file

    for bad in ({"dpo": {"rater": "alice"}}, {"dpo.rater": None}):
        with pytest.raises(UserError, match=r"^unknown config field dpo\.rater \(never read; `rlft train --rater NAME`"):
            from_dict(bad)
    saved = TrainConfig.toy(algo="dpo").to_dict()
    saved["dpo"]["rater"] = "alice"  # an older run's config.json or checkpoint: the field never changed its result
    assert from_saved(saved) == TrainConfig.toy(algo="dpo")
    run_config = tmp_path / "config.json"  # an older run's config.json as a config file: its unset rater goes
    saved["dpo"]["rater"] = None
    run_config.write_text(json.dumps({"config": saved, "provenance": {}}))
    assert from_dict(read_config_file(run_config)) == TrainConfig.toy(algo="dpo")
    saved["dpo"]["rater"] = "alice"  # one that set it is refused, as the file it came from would be now
    run_config.write_text(json.dumps({"config": saved, "provenance": {}}))
    with pytest.raises(UserError, match=r"dpo\.rater"):
        from_dict(read_config_file(run_config))


def test_clip_compatibility():
    check_compatible("toy", 64, "toy")
    check_compatible("ViT-L-14/openai", 512, "sd15")
    with pytest.raises(UserError, match="toy CLIP"):
        check_compatible("toy", 512, "sd15")
    with pytest.raises(UserError, match="--clip toy"):
        check_compatible("ViT-B-32/openai", 64, "toy")
