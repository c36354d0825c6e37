"""Training on the tiny pipeline: learning happens, resume is exact, the LoRA loads in plain diffusers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import PROMPTS, judgements, redness, tiny_config

from rlft.models.tiny import tiny_pipeline
from rlft.train.ddim import encode_prompts
from rlft.train.trainer import Trainer

torch.set_num_threads(2)


def make(algo="ddpo", run_dir=None, **over):
    return Trainer(tiny_pipeline(0), tiny_config(algo, **over), prompts=PROMPTS, reward_fn=redness,
                   heldout_fn=redness, judgements=judgements(), run_dir=run_dir)


@pytest.mark.parametrize("algo", ["ddpo", "rwr", "dpo"])
def test_learning_changes_only_lora_parameters(algo):
    tr = make(algo, epochs=1, kl_weight=0.1, lora={"init_std": 0.01})
    base = {k: v.clone() for k, v in tr.pipe.unet.named_parameters() if "lora" not in k}
    lora = [p.detach().clone() for p in tr.params]
    metrics = tr.train()
    assert any(not torch.equal(a, b) for a, b in zip(lora, tr.params, strict=False))  # learning happened
    now = dict(tr.pipe.unet.named_parameters())
    assert all(torch.equal(v, now[k]) for k, v in base.items())  # the base stays frozen
    m = metrics[0]
    assert m["epoch"] == 1 and m["loss"] is not None and m["kl"] is not None
    if algo != "dpo":
        assert m["reward_mean"] is not None and m["heldout_reward_mean"] is not None


@pytest.mark.parametrize("algo", ["ddpo", "rwr", "dpo"])
def test_text_encoder_lora_learns_and_the_reference_reads_the_base_encoder(algo):
    # ddpo backpropagates through the text encoder once per trained timestep: each needs its own graph
    tr = make(algo, epochs=1, kl_weight=0.1, lora={"init_std": 0.01, "train_text_encoder": True},
              sample={"steps": 3}, ddpo={"timestep_fraction": 1.0})
    te = tr.pipe.text_encoder
    frozen = {k: v.clone() for k, v in te.named_parameters() if "lora" not in k}
    te_lora = {k: v.detach().clone() for k, v in te.named_parameters() if "lora" in k}
    assert te_lora and all(p.requires_grad for k, p in te.named_parameters() if "lora" in k)
    m = tr.train()[0]
    assert m["kl"] is not None and m["kl"] > 0
    now = dict(te.named_parameters())
    assert any(not torch.equal(v, now[k]) for k, v in te_lora.items())  # the text encoder's adapter learned
    assert all(torch.equal(v, now[k]) for k, v in frozen.items())  # its base weights did not move
    # the reference policy sees the base text encoder's encodings, not the adapted ones
    with torch.no_grad():
        adapted, _ = tr.embed(PROMPTS, 1.0)
        base, _ = tr.base_embed(PROMPTS, 1.0, adapted, None)
        plain, _ = encode_prompts(tiny_pipeline(0), PROMPTS, 1.0)
    torch.testing.assert_close(base, plain)
    assert not torch.allclose(adapted, base)


def test_toy_ddpo_takes_one_on_policy_step_per_epoch_and_ppo_clips_the_later_steps_of_many():
    # the toy default: 4 micro-batches accumulate into one optimizer step, so every ratio is exactly 1
    one = make("ddpo", epochs=1, sample={"samples_per_epoch": 8}, optim={"train_batch_size": 2}, lora={"init_std": 0.01})
    assert one.config.optim.gradient_accumulation_steps == 4
    m = one.train()[0]
    assert m["clipfrac"] == 0.0 and m["approx_kl"] == 0.0
    # one step per micro-batch: after the first, the ratios leave the 1e-4 clip range
    many = make("ddpo", epochs=1, sample={"samples_per_epoch": 8}, optim={"train_batch_size": 2, "gradient_accumulation_steps": 1},
                lora={"init_std": 0.01})
    m = many.train()[0]
    assert m["clipfrac"] > 0.1 and m["approx_kl"] > 0.0


@pytest.mark.parametrize("choice", ["random", "first"])
def test_ddpo_trains_the_chosen_steps_with_the_temporal_discount(monkeypatch, choice):
    import rlft.train.algorithms as algorithms

    seen, raw, sent = [], [], []
    real_logprob, real_ppo = algorithms.recompute_log_prob, algorithms.losses.ppo_loss
    monkeypatch.setattr(algorithms, "recompute_log_prob",
                        lambda pipe, unet, sub, k, *a: seen.append(k) or real_logprob(pipe, unet, sub, k, *a))

    def ppo(*a):
        loss, info = real_ppo(*a)
        loss = loss + 1.0  # at ratio 1 with zero-mean advantages the loss is 0; a constant keeps the gradient
        raw.append(loss.item())
        return loss, info

    monkeypatch.setattr(algorithms.losses, "ppo_loss", ppo)
    tr = make("ddpo", epochs=1, kl_weight=0.0, sample={"steps": 4}, lora={"init_std": 0.01},
              ddpo={"timestep_fraction": 0.5, "discount": 0.5, "timestep_choice": choice})
    real_backward = tr.accelerator.backward
    monkeypatch.setattr(tr.accelerator, "backward", lambda loss: sent.append(loss.item()) or real_backward(loss))
    tr.train()
    assert len(seen) == 2 and seen == sorted(seen)  # one micro-batch, half of the four steps, in order
    if choice == "first":
        assert seen == [0, 1]  # the earliest, noisiest steps
    accum = tr.config.optim.gradient_accumulation_steps
    weights = [s * 2 * accum / r for s, r in zip(sent, raw, strict=False)]
    expected = [0.5**k for k in seen]
    expected = [w * len(expected) / sum(expected) for w in expected]  # mean 1 over the trained steps
    assert weights == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("algo", ["rwr", "dpo"])
def test_denoising_losses_train_only_the_noise_levels_asked_for(algo):
    def timesteps(min_timestep):
        # rwr without shared noise: a draw per sample, not one per prompt's group
        section = {"min_timestep": min_timestep, **({"shared_noise": False} if algo == "rwr" else {})}
        tr = make(algo, epochs=2, kl_weight=0.0, lora={"init_std": 0.01}, **{algo: section})
        seen, real = [], tr.algorithm.denoise_inputs
        tr.algorithm.denoise_inputs = lambda *a: (out := real(*a), seen.extend(out[2].tolist()))[0]
        tr.train()
        return seen

    everywhere, noisy = timesteps(0.0), timesteps(0.5)
    assert len(noisy) >= 4 and min(noisy) >= 500 and max(noisy) < 1000
    assert min(everywhere) < 500  # unrestricted (seeded, so the same draws every run)


def test_dpo_conditions_each_image_of_a_cross_prompt_pair_on_its_own_prompt():
    from PIL import Image

    red, blue = Image.new("RGB", (64, 64), (230, 30, 30)), Image.new("RGB", (64, 64), (30, 30, 230))
    pairs = [(red, blue, "a red circle", "a blue square"), (blue, red, "a blue square", "a blue square")]
    tr = Trainer(tiny_pipeline(0), tiny_config("dpo", epochs=1, kl_weight=0.0, dpo={"pairs_per_epoch": 8}), prompts=PROMPTS,
                 reward_fn=redness, heldout_fn=None, judgements=pairs)
    seen, real = [], tr.embed
    tr.embed = lambda prompts, guidance: (seen.append(list(prompts)), real(prompts, guidance))[1]
    tr.algorithm.epoch(1)
    assert seen and all(len(p) % 2 == 0 for p in seen)
    for prompts in seen:  # winners' prompts, then the losers' own prompts, pair by pair
        half = len(prompts) // 2
        for w, l in zip(prompts[:half], prompts[half:], strict=False):
            assert (w, l) in {("a red circle", "a blue square"), ("a blue square", "a blue square")}
    assert any(p[: len(p) // 2] != p[len(p) // 2:] for p in seen)  # the cross-prompt pair was drawn and kept apart
    # A (winner, loser, prompt) triple still means one prompt for both.
    assert Trainer(tiny_pipeline(0), tiny_config("dpo"), prompts=PROMPTS, reward_fn=redness, heldout_fn=None,
                   judgements=judgements()).algorithm.lose_prompts == [PROMPTS[0], PROMPTS[1], PROMPTS[0]]


@pytest.mark.parametrize("shared", [True, False])
def test_rwr_shared_noise_denoises_a_prompts_samples_from_one_draw(shared):
    over = {"sample": {"samples_per_epoch": 8, "images_per_prompt": 2}, "optim": {"train_batch_size": 4, "inner_epochs": 1}}
    tr = make("rwr", epochs=2, kl_weight=0.0, lora={"init_std": 0.01}, rwr={"shared_noise": shared}, **over)
    calls, real = [], tr.algorithm.denoise_inputs
    tr.algorithm.denoise_inputs = lambda x0, gen, low, groups=None: (out := real(x0, gen, low, groups),
                                                                      calls.append((groups, out[1], out[2])))[0]
    tr.train()
    assert len(calls) >= 4 and all(len(noise) <= 4 for _, noise, _ in calls)
    if not shared:
        assert all(groups is None for groups, _, _ in calls)
        assert all(len(set(steps.tolist())) > 1 or len(steps) == 1 for _, _, steps in calls[:2])
        return
    for groups, noise, steps in calls:
        for i, gi in enumerate(groups):
            for j, gj in enumerate(groups):
                same = torch.equal(noise[i], noise[j]) and steps[i] == steps[j]
                assert same == (gi == gj)  # one draw per prompt, another for each other prompt
    # a prompt's samples share a micro-batch unless there are more of them than fit in one (then full batches)
    for epoch_calls in [calls[: len(calls) // 2], calls[len(calls) // 2 :]]:
        sizes = {}
        for groups, _, _ in epoch_calls:
            for g in groups:
                sizes[g] = sizes.get(g, 0) + 1
        assert sum(sizes.values()) == 8
        for g, size in sizes.items():
            in_calls = sum(g in groups for groups, _, _ in epoch_calls)
            assert in_calls == 1 if size <= 4 else in_calls == -(-size // 4)


def test_rwr_clip_range_trains_inside_a_trust_region_around_the_base():
    over = {"sample": {"samples_per_epoch": 8, "images_per_prompt": 2}, "optim": {"train_batch_size": 8, "learning_rate": 0.05}}
    tr = make("rwr", epochs=4, kl_weight=0.0, rwr={"clip_range": 0.001}, **over)
    metrics = tr.train()
    active = [m["active_frac"] for m in metrics]
    assert active[0] == 1.0  # the LoRA starts at zero: every error equals the base's, all inside
    assert min(active[1:]) < 1.0  # after steps this large some samples have moved past the region
    plain = make("rwr", epochs=1, kl_weight=0.0, **over).train()
    assert plain[0]["active_frac"] is None  # off by default: the plain signed loss
    assert plain[0]["loss"] == pytest.approx(metrics[0]["loss"])  # and, all inside, the same loss


def test_group_batches_keep_groups_whole_and_cover_every_sample_once():
    from rlft.train.algorithms import group_batches

    groups = ["a", "a", "b", "b", "b", "c", "a", "d", "d", "d", "d", "d", "d"]
    gen = torch.Generator().manual_seed(0)
    batches = [b.tolist() for b in group_batches(groups, 4, gen)]
    assert sorted(i for b in batches for i in b) == list(range(len(groups)))
    assert all(len(b) <= 4 for b in batches)
    for g in "abc":  # groups that fit a batch are never split
        assert sum(any(groups[i] == g for i in b) for b in batches) == 1
    assert sorted(len(b) for b in batches if all(groups[i] == "d" for i in b))[-1] == 4  # d (6) is split in full batches
    assert [b.tolist() for b in group_batches(groups, 4)] == [[0, 1, 6], [2, 3, 4, 5], [7, 8, 9, 10], [11, 12]]


@pytest.mark.parametrize("guided", [True, False])
def test_rwr_fits_the_guided_prediction_that_drew_its_samples(guided):
    # samples come from the CFG-guided sampler; the denoising loss is that policy's, [uncond; cond] in one call
    over = {"sample": {"images_per_prompt": 1}, "lora": {"init_std": 0.01}}  # both prompts in the one micro-batch
    tr = make("rwr", epochs=1, kl_weight=0.0, rwr={"guided_loss": guided}, **over)
    assert tr.config.sample.guidance == 3.0
    calls = []

    def spy(module, args, kwargs):
        if torch.is_grad_enabled():  # training forwards only (sampling and the base run without grad)
            calls.append((args[0].shape[0], kwargs["encoder_hidden_states"]))

    hook = tr.raw_unet.register_forward_pre_hook(spy, with_kwargs=True)
    loss = tr.train()[0]["loss"]
    hook.remove()
    assert [n for n, _ in calls] == ([8] if guided else [4])  # 4 samples, each twice when guided
    with torch.no_grad():
        ref_pos, ref_neg = encode_prompts(tr.pipe, PROMPTS, 3.0)
    neg, pos = calls[0][1].chunk(2) if guided else (None, calls[0][1])
    if guided:  # the unconditional half first, as the sampler's CFG
        assert all(torch.equal(row, ref_neg[0]) for row in neg)
    matched = {i for row in pos for i, ref in enumerate(ref_pos) if torch.equal(row, ref)}
    assert matched == {0, 1} and len(pos) == 4
    other = make("rwr", epochs=1, kl_weight=0.0, rwr={"guided_loss": not guided}, **over)
    assert abs(other.train()[0]["loss"] - loss) > 1e-5  # same samples and noise, another objective


def test_rwr_regulariser_compares_like_with_like():
    # with the adapter at the identity (peft's B = 0), the guided prediction equals the guided base exactly
    tr = make("rwr", epochs=1, kl_weight=0.5)
    assert tr.config.lora.init_std is None and tr.config.rwr.guided_loss
    assert tr.train()[0]["kl"] == 0.0


def test_rwr_baseline_takes_no_step_when_every_sample_is_as_good():
    # plain rwr regresses onto its own samples even when the reward says nothing: that is drift
    def flat(images, prompts, metadata):
        return torch.zeros(len(images)), {}

    def trainer(rwr):
        return Trainer(tiny_pipeline(0), tiny_config("rwr", epochs=1, rwr=rwr, lora={"init_std": 0.01}),
                       prompts=PROMPTS, reward_fn=flat, heldout_fn=flat, judgements=judgements())

    # exp weights centred or not, and the group advantages (all 0 here) of the default
    for rwr, moves in [({"weighting": "exp", "baseline": True}, False), ({"weighting": "exp", "baseline": False}, True),
                       ({}, False)]:
        tr = trainer(rwr)
        before = [p.detach().clone() for p in tr.params]
        tr.train()
        assert any(not torch.equal(a, b) for a, b in zip(before, tr.params, strict=False)) == moves


@pytest.mark.parametrize("algo", ["ddpo", "rwr", "rwr-nft", "dpo"])
def test_resume_equals_uninterrupted_run(tmp_path, algo):
    # rwr also mixes in rated images (two micro-batches, two optimizer steps: nft reads its sampling weights in the
    # second); every algorithm with its regulariser on
    algo, _, weighting = algo.partition("-")
    over = {"lora": {"init_std": 0.01}, "kl_weight": 0.1, "rwr": {"mix_top_rated": 1, "weighting": weighting or "advantage"}}

    def trainer(run, **more):
        tr = make(algo, run_dir=tmp_path / run, **over, **more)
        tr.extra_images = [(judgements(1)[0][0], "a red circle")]
        return tr

    full = trainer("full")
    full.train()
    trainer("part", epochs=1).train()
    # a fresh process (new pipeline, new trainer) continues from the checkpoint to epoch 2
    resumed = trainer("part")
    resumed.train(resume=True)
    a, b = full.lora_state()["unet"], resumed.lora_state()["unet"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = trainer("fresh").lora_state()["unet"]
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it did learn
    lines = [json.loads(l) for l in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2]
    ref = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert lines[1]["loss"] == ref[1]["loss"] and lines[1].get("reward_mean") == ref[1].get("reward_mean")


@pytest.mark.parametrize("text_encoder", [False, True])
def test_run_outputs_and_lora_loads_in_plain_diffusers(tmp_path, text_encoder):
    run = tmp_path / "run"
    tr = make("rwr", run_dir=run, epochs=1, lora={"init_std": 0.05, "alpha": 8.0, "train_text_encoder": text_encoder})
    tr.train()
    keys = load_file(str(run / "lora" / "pytorch_lora_weights.safetensors")).keys()
    assert any(k.startswith("text_encoder.") for k in keys) == text_encoder
    assert any(k.startswith("lora_te_") for k in load_file(str(run / "lora_kohya.safetensors"))) == text_encoder
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0000.png", "epoch_0001.png", "grid.json"]
    assert (run / "checkpoint.pt").is_file()
    prompt, gen = ["a red circle"], lambda: torch.Generator().manual_seed(3)
    with torch.no_grad():
        trained = tr.pipe(prompt, num_inference_steps=2, generator=gen(), output_type="latent").images
        plain = tiny_pipeline(0)
        base = plain(prompt, num_inference_steps=2, generator=gen(), output_type="latent").images
        plain.load_lora_weights(str(run / "lora"))  # stock diffusers, the run's diffusers export
        loaded = plain(prompt, num_inference_steps=2, generator=gen(), output_type="latent").images
        assert not torch.allclose(base, loaded)
        torch.testing.assert_close(loaded, trained, rtol=1e-4, atol=1e-4)
        kohya = tiny_pipeline(0)  # diffusers reads the kohya layout too: same images
        kohya.load_lora_weights(str(run), weight_name="lora_kohya.safetensors")
        torch.testing.assert_close(kohya(prompt, num_inference_steps=2, generator=gen(), output_type="latent").images,
                                   trained, rtol=1e-4, atol=1e-4)


def test_kohya_key_layout(tmp_path):
    tr = make("ddpo", run_dir=tmp_path / "run", epochs=1, lora={"rank": 2})
    tr.train()
    sd = load_file(str(tmp_path / "run" / "lora_kohya.safetensors"))
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{key}.lora_down.weight", f"{key}.lora_up.weight", f"{key}.alpha"} <= set(sd)
    assert "lora_unet_up_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_up.weight" in sd
    assert sd[f"{key}.lora_down.weight"].shape[0] == 2 and float(sd[f"{key}.alpha"]) == 2.0
    assert all(k.startswith("lora_unet_") and k.count(".") in (1, 2) for k in sd)
