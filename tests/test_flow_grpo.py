"""grpo (Flow-GRPO) on the tiny SD3 and FLUX pipelines: one epoch trains the transformer's and the CLIP encoders'
LoRA and nothing else, ratios are exactly 1 before any update, the window of trained steps, exact resume, the
exports, and algorithms refused for the other kind of model."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import PROMPTS, redness, tiny_config

from prefs.errors import UserError
from rlft.models.tiny import tiny_flux_pipeline, tiny_pipeline, tiny_sd3_pipeline
from rlft.train.trainer import Trainer

torch.set_num_threads(2)


def build(family):
    return tiny_sd3_pipeline(0) if family == "sd3" else tiny_flux_pipeline(0)


def make(family, run_dir=None, **over):
    over = {"sample": {"guidance": 4.0 if family == "sd3" else 3.5, **over.pop("sample", {})}, **over}
    return Trainer(build(family), tiny_config("grpo", **over), prompts=PROMPTS, reward_fn=redness,
                   heldout_fn=redness, run_dir=run_dir)


def lora_params(part) -> dict:
    return {k: v.detach().clone() for k, v in part.named_parameters() if "lora" in k}


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_one_epoch_trains_the_transformer_and_clip_loras_only(family):
    tr = make(family, epochs=1, kl_weight=0.1, lora={"init_std": 0.01, "train_text_encoder": True},
              sample={"images_per_prompt": 2})
    encoders = ["text_encoder", "text_encoder_2"] if family == "sd3" else ["text_encoder"]
    parts = {name: getattr(tr.pipe, name) for name in ("transformer", *encoders)}
    before = {name: lora_params(part) for name, part in parts.items()}
    frozen = {name: {k: v.clone() for k, v in part.named_parameters() if "lora" not in k} for name, part in parts.items()}
    t5 = tr.pipe.text_encoder_3 if family == "sd3" else tr.pipe.text_encoder_2
    t5_before = {k: v.clone() for k, v in t5.state_dict().items()}
    m = tr.train()[0]
    assert m["epoch"] == 1 and m["algo"] == "grpo" and m["loss"] is not None and m["kl"] is not None
    assert m["trained_steps"] == 2 and m["samples"] == 4
    assert type(tr.pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"  # the flow's own schedule
    for name, part in parts.items():
        now = dict(part.named_parameters())
        assert before[name] and any(not torch.equal(v, now[k]) for k, v in before[name].items()), name  # it learned
        assert all(torch.equal(v, now[k]) for k, v in frozen[name].items()), name  # the base stayed frozen
    assert all(torch.equal(v, t5.state_dict()[k]) for k, v in t5_before.items())
    assert set(tr.lora_state()) == {"transformer", *encoders}


def test_ratios_are_exactly_one_before_any_update(monkeypatch):
    from rlft.train import losses

    seen = []
    ppo_loss = losses.ppo_loss

    def recording(log_prob, old_log_prob, *args):
        seen.append((log_prob - old_log_prob).detach())
        return ppo_loss(log_prob, old_log_prob, *args)

    monkeypatch.setattr(losses, "ppo_loss", recording)
    # two micro-batches accumulated into one optimizer step at the epoch's end: every recomputed step replays the
    # policy that sampled it, so every ratio is exactly 1
    tr = make("sd3", epochs=1, optim={"train_batch_size": 2, "gradient_accumulation_steps": 4}, lora={"init_std": 0.01})
    m = tr.train()[0]
    assert len(seen) == 4 and all((d == 0).all() for d in seen) and m["clipfrac"] == 0
    # one optimizer step per micro-batch: the second micro-batch's ratios follow the first one's update
    seen.clear()
    tr = make("sd3", epochs=1, optim={"train_batch_size": 2, "gradient_accumulation_steps": 1}, lora={"init_std": 0.01})
    m = tr.train()[0]
    assert all((d == 0).all() for d in seen[:2]) and all((d != 0).any() for d in seen[2:]) and m["clipfrac"] > 0


def test_the_window_picks_the_trained_steps():
    tr = make("flux", epochs=1, sample={"steps": 3}, grpo={"window_start": 1, "window_size": 1})
    [traj] = tr.sample(PROMPTS[:1], [0])
    assert traj.steps.tolist() == [1] and traj.log_probs.shape == (1, 1) and traj.noise_level == 0.7
    assert tr.train()[0]["trained_steps"] == 1
    with pytest.raises(UserError, match="trained steps"):
        make("flux", epochs=1, sample={"steps": 2}, grpo={"window_start": 2}).train()
    with pytest.raises(UserError, match="grpo.window_size"):
        tiny_config("grpo", grpo={"window_size": -1})


def test_resume_equals_uninterrupted_run_and_the_exports(tmp_path):
    over = {"lora": {"init_std": 0.01, "train_text_encoder": True}, "kl_weight": 0.1}
    full = make("flux", run_dir=tmp_path / "full", **over)
    full.train()
    make("flux", run_dir=tmp_path / "part", epochs=1, **over).train()
    resumed = make("flux", run_dir=tmp_path / "part", **over)  # a fresh pipeline and trainer
    resumed.train(resume=True)
    a, b = full.lora_state(), resumed.lora_state()
    assert set(a) == set(b) == {"transformer", "text_encoder"}
    assert all(torch.equal(a[p][k], b[p][k]) for p in a for k in a[p])
    lines = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2] and lines[1]["loss"] == ref[1]["loss"]
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)["family"] == "flux"
    assert (tmp_path / "full" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "full" / "lora_kohya.safetensors").is_file()
    assert (tmp_path / "full" / "samples" / "epoch_0002.png").is_file()


def test_sd3_runs_export_diffusers_only(tmp_path):
    make("sd3", run_dir=tmp_path / "run", epochs=1).train()
    assert (tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert not (tmp_path / "run" / "lora_kohya.safetensors").exists()


def test_algorithms_fit_their_models():
    with pytest.raises(UserError, match="SD3 models train with grpo"):
        Trainer(tiny_sd3_pipeline(0), tiny_config("ddpo"), prompts=PROMPTS, reward_fn=redness)
    with pytest.raises(UserError, match="grpo trains SD3 and FLUX models"):
        Trainer(tiny_pipeline(0), tiny_config("grpo"), prompts=PROMPTS, reward_fn=redness)
    with pytest.raises(UserError, match="needs a reward function"):
        Trainer(tiny_flux_pipeline(0), tiny_config("grpo"), prompts=PROMPTS)



def test_flow_preset_is_flow_grpos():
    from rlft.train.config import TrainConfig

    c = TrainConfig.flow()
    assert (c.algo, c.sample.steps, c.sample.guidance, c.sample.images_per_prompt, c.kl_weight) == ("grpo", 10, 4.5, 8, 0.04)
    assert (c.grpo.noise_level, c.grpo.clip_range, c.optim.learning_rate, c.optim.mixed_precision) == (0.7, 1e-4, 3e-4, "bf16")
    assert c.optim.train_batch_size * c.optim.gradient_accumulation_steps == 16
    assert TrainConfig.flow(sample={"guidance": 3.5}).sample.guidance == 3.5


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_an_update_raises_the_log_probs_of_the_better_samples(family):
    # Flow-GRPO's step is a policy-gradient step on sum_i A_i log p(trajectory_i): after one small optimizer step the
    # recorded SDE steps of above-average samples (in their prompt's group) become likelier and the others less
    # likely, so sum_i A_i (log p_new - log p_old) > 0; the negated reward moves them the other way
    from rlft.train.flow import recompute_log_prob
    from rlft.train.stats import group_advantages

    def surrogate_change(sign):
        tr = make(family, epochs=1, sample={"samples_per_epoch": 8, "batch_size": 8, "images_per_prompt": 4},
                  optim={"learning_rate": 1e-3, "train_batch_size": 8}, lora={"init_std": 0.01})
        taken = []
        sample = tr.sample

        def recording(prompts, seeds, unet=None):
            trajs = sample(prompts, seeds, unet)
            taken.extend(trajs)
            return trajs

        tr.sample = recording
        reward = lambda images, prompts, metadata: (sign * redness(images, prompts, metadata)[0], {})  # noqa: E731
        tr.reward_fn = reward
        tr.train()
        [traj] = taken
        rewards = reward(torch.cat([tr.decode(traj.final)]), traj.prompts, {})[0]
        adv = torch.as_tensor(group_advantages(traj.prompts, rewards.numpy()), dtype=torch.float32)
        with torch.no_grad():
            new = torch.stack([recompute_log_prob(tr.pipe, tr.unet, traj, k, tr.config.sample.guidance).log_prob
                               for k in range(traj.log_probs.shape[1])], 1)
        return float((adv[:, None] * (new - traj.log_probs)).sum())

    up, down = surrogate_change(+1.0), surrogate_change(-1.0)
    assert up > 0 and down > 0, (up, down)
