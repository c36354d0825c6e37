"""`rlft train` on SDXL, on the tiny SDXL pipeline built in code: every algorithm through the model adapter (ddpo's
DDIM log-probs with SDXL's added conditioning, rwr, dpo with each judged image at its own size and micro-conditioning),
LoRA on the UNet and both text encoders, exact log-prob replay, exact resume (also after `kill -9`), a pixel reward
that moves the images, the run's exports in plain diffusers, and a reward whose CLIP cannot take the images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from train_helpers import PROMPTS, judgements, redness, tiny_config

from rlft.cli import main
from rlft.models.adapters import Conditioning
from rlft.models.schedulers import set_scheduler
from rlft.models.tiny import tiny_sdxl_pipeline
from rlft.train.ddim import recompute_log_prob, sample_with_logprob
from rlft.train.trainer import Trainer

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[1]
# run settings small enough for a CPU test, laid over the SDXL preset (`TrainConfig.sdxl`) by `rlft train --config`
TINY = {"epochs": 2, "sample": {"steps": 2, "samples_per_epoch": 4, "batch_size": 4, "grid_prompts": 1, "grid_seeds": 2},
        "optim": {"train_batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 1e-2},
        "lora": {"init_std": 0.05, "train_text_encoder": True}}


def make(algo="ddpo", run_dir=None, pipe=None, **over):
    return Trainer(pipe or tiny_sdxl_pipeline(0), tiny_config(algo, **over), prompts=PROMPTS, reward_fn=redness,
                   heldout_fn=redness, judgements=judgements(), run_dir=run_dir)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def lora_params(part) -> dict:
    return {k: v.detach().clone() for k, v in part.named_parameters() if "lora" in k}


# -- the algorithms -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ["ddpo", "rwr", "dpo"])
def test_one_epoch_of_each_algorithm_trains_the_unet_and_both_text_encoders(algo):
    tr = make(algo, epochs=1, kl_weight=0.1, lora={"init_std": 0.01, "train_text_encoder": True})
    assert tr.adapter.family == "sdxl" and type(tr.pipe.scheduler).__name__ == "DDIMScheduler"  # Euler swapped for DDIM
    parts = {name: getattr(tr.pipe, name) for name in ("unet", "text_encoder", "text_encoder_2")}
    before = {name: lora_params(part) for name, part in parts.items()}
    frozen = {name: {k: v.clone() for k, v in part.named_parameters() if "lora" not in k} for name, part in parts.items()}
    m = tr.train()[0]
    assert m["epoch"] == 1 and m["loss"] is not None and m["kl"] is not None
    for name, part in parts.items():
        now = dict(part.named_parameters())
        assert before[name] and any(not torch.equal(v, now[k]) for k, v in before[name].items()), name  # it learned
        assert all(torch.equal(v, now[k]) for k, v in frozen[name].items()), name  # the base stayed frozen
    assert set(tr.lora_state()) == {"unet", "text_encoder", "text_encoder_2"}


def test_ddpo_replays_an_sdxl_trajectory_exactly_and_samples_what_the_pipeline_samples():
    pipe = tiny_sdxl_pipeline(0)
    set_scheduler(pipe, "ddim")
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    traj = sample_with_logprob(pipe, PROMPTS, steps=4, guidance=5.0, eta=1.0, generator=gens)
    assert traj.log_probs.shape == (2, 4) and traj.latents.shape == (2, 4, 4, 8, 8)
    assert isinstance(traj.cond, Conditioning) and traj.cond.guided
    assert traj.cond.added["time_ids"].tolist() == [[64, 64, 0, 0, 64, 64]] * 2  # SDXL's micro-conditioning
    with torch.no_grad():
        for k in range(4):
            again = recompute_log_prob(pipe, pipe.unet, traj, k, guidance=5.0, eta=1.0)
            assert torch.equal(again.log_prob, traj.log_probs[:, k])  # exactly: importance ratio 1
            assert torch.equal(torch.exp(again.log_prob - traj.log_probs[:, k]), torch.ones(2))
        # the SDXL conditioning matters: without the pooled text and size ids the same step scores differently
        bare = Conditioning(traj.cond.embeds, traj.cond.negative_embeds,
                            {**traj.cond.added, "time_ids": traj.cond.added["time_ids"] * 2}, traj.cond.negative_added)
        assert not torch.equal(recompute_log_prob(pipe, pipe.unet, traj, 0, 5.0, 1.0, cond=bare).log_prob, traj.log_probs[:, 0])
        gens = [torch.Generator().manual_seed(i) for i in range(2)]
        plain = pipe(PROMPTS, num_inference_steps=4, guidance_scale=5.0, eta=1.0, generator=gens, output_type="latent").images
    assert torch.equal(traj.final, plain)  # the same latents as plain StableDiffusionXLPipeline with DDIM


def test_dpo_sees_each_pair_at_its_own_size_with_its_micro_conditioning():
    red, blue = (230, 30, 30), (30, 30, 230)
    pairs = [(Image.new("RGB", (64, 64), red), Image.new("RGB", (64, 64), blue), PROMPTS[0]),  # square
             (Image.new("RGB", (128, 64), red), Image.new("RGB", (128, 64), blue), PROMPTS[1]),  # landscape
             (Image.new("RGB", (64, 128), blue), Image.new("RGB", (96, 96), red), PROMPTS[0])]  # loser cropped to fit
    tr = Trainer(tiny_sdxl_pipeline(0), tiny_config("dpo", epochs=1, kl_weight=0.0, dpo={"pairs_per_epoch": 6},
                                                    optim={"train_batch_size": 6}),
                 prompts=PROMPTS, reward_fn=None, judgements=pairs)
    latents = tr.algorithm.pairs
    assert [tuple(latents.win[i].shape[-2:]) for i in range(3)] == [(8, 8), (8, 16), (16, 8)]
    assert [tuple(latents.lose[i].shape[-2:]) for i in range(3)] == [(8, 8), (8, 16), (16, 8)]
    # (original size, crop top-left, target size), height first: the 96 x 96 loser is scaled to 128 x 128, then cropped
    assert latents.geometry[2] == (((128, 64), (0, 0), (128, 64)), ((96, 96), (0, 32), (128, 64)))
    calls = []

    def spy(module, args, kwargs):
        if torch.is_grad_enabled():
            calls.append((tuple(args[0].shape[-2:]), kwargs["added_cond_kwargs"]["time_ids"].tolist()))

    hook = tr.raw_unet.register_forward_pre_hook(spy, with_kwargs=True)
    m = tr.train()[0]
    hook.remove()
    assert m["loss"] is not None and m["pairs"] == 6
    assert len(calls) == len({shape for shape, _ in calls}) > 1  # one UNet call per size in the micro-batch
    for (h, w), ids in calls:
        assert all(row[4:] == [h * 8, w * 8] for row in ids)  # the target size is the latents' own
    wide = next(ids for shape, ids in calls if shape == (8, 16))
    assert [64, 128, 0, 0, 64, 128] in wide


# -- resume, and what comes out of a run --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ddpo", "rwr", "dpo"])
def test_resume_equals_uninterrupted_run(tmp_path, algo):
    over = {"lora": {"init_std": 0.01, "train_text_encoder": True}, "kl_weight": 0.1}
    full = make(algo, run_dir=tmp_path / "full", **over)
    full.train()
    make(algo, run_dir=tmp_path / "part", epochs=1, **over).train()
    resumed = make(algo, run_dir=tmp_path / "part", **over)  # a fresh pipeline and trainer
    resumed.train(resume=True)
    a, b = full.lora_state(), resumed.lora_state()
    assert set(a) == set(b) == {"unet", "text_encoder", "text_encoder_2"}
    assert all(torch.equal(a[p][k], b[p][k]) for p in a for k in a[p])
    lines = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2] and lines[1]["loss"] == ref[1]["loss"]
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)["family"] == "sdxl"


@pytest.mark.slow
def test_a_pixel_reward_moves_the_images_through_the_sdxl_path():
    # brightness as the reward itself (no CLIP): a few ddpo epochs must brighten the fixed-seed samples, and the
    # negated reward darken them; only a gradient that reaches the LoRA through SDXL's conditioning can do that.
    # The random tiny VAE's last GroupNorm takes the latents' mean out of every image (each comes out 0.48 +- 0.001
    # bright whatever the latents), so this one decodes without it, letting brightness follow the latents as a
    # trained VAE's does.
    def run(sign):
        def reward(images, prompts, metadata):
            return sign * images.mean(dim=(1, 2, 3)), {}

        config = tiny_config("ddpo", epochs=4, kl_weight=0.0,
                             sample={"steps": 4, "guidance": 5.0, "samples_per_epoch": 16, "batch_size": 16},
                             optim={"learning_rate": 2e-2, "train_batch_size": 16, "gradient_accumulation_steps": 1},
                             ddpo={"timestep_fraction": 1.0, "per_prompt_stats": False})
        pipe = tiny_sdxl_pipeline(0)
        pipe.vae.decoder.conv_norm_out = torch.nn.Identity()
        tr = Trainer(pipe, config, prompts=PROMPTS, reward_fn=reward)

        def brightness():  # of 16 fixed prompt/seed pairs
            return torch.cat([tr.decode(t.final) for t in tr.sample(PROMPTS * 8, list(range(16)))]).mean(dim=(1, 2, 3))

        before = brightness()
        tr.train()
        return before, brightness()

    before, brighter = run(+1.0)
    same, darker = run(-1.0)
    assert torch.equal(before, same)
    up, down = brighter - before, before - darker  # per image: paired on the same seeds
    stderr = max(up.std(), down.std()) / len(up) ** 0.5
    assert up.mean() > 5 * stderr and down.mean() > 5 * stderr, (up.mean(), down.mean(), stderr)


@pytest.fixture(scope="module")
def sdxl_home(tmp_path_factory):
    """A tiny SDXL diffusers folder, a prompt file, and a reward version on a tiny real (open_clip) CLIP, made in a
    home of their own (`--reward` names its folder)."""
    from reward_util import judged_store

    from rlft.models.tiny import tiny_clip_folder

    root = tmp_path_factory.mktemp("sdxl-train")
    tiny_sdxl_pipeline(0).save_pretrained(root / "model")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    (root / "tiny.json").write_text(json.dumps(TINY))
    saved = os.environ.get("RLFT_HOME")
    os.environ["RLFT_HOME"] = str(root / "home")
    try:
        judged_store(n_images=12, n_judgements=30).close()
        clip = tiny_clip_folder(root / "clip")
        for spec in (clip, "toy"):  # r0001 on a real (open_clip) CLIP, r0002 on the toy CLIP
            result = CliRunner().invoke(main, ["reward", "train", "--clip", str(spec), "--ensemble", "2", "--steps", "20"])
            assert result.exit_code == 0, result.output
        rewards = {"real": root / "home" / "rewards" / "r0001", "toy": root / "home" / "rewards" / "r0002"}
        assert all((path / "reward.json").is_file() for path in rewards.values()), list((root / "home").rglob("reward.json"))
    finally:
        if saved is None:
            os.environ.pop("RLFT_HOME", None)
        else:
            os.environ["RLFT_HOME"] = saved
    return {"root": root, "model": root / "model", "prompts": root / "prompts.txt", "config": root / "tiny.json", **rewards}


def png(path):
    return np.asarray(Image.open(path), dtype=int)


@pytest.mark.slow
def test_cli_run_on_sdxl_and_its_exports_load_in_plain_diffusers(sdxl_home, rlft_home, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open

    from rlft.models.generate import generate

    run = tmp_path / "run"
    result = invoke("train", "--model", sdxl_home["model"], "--reward", sdxl_home["real"], "--prompts",
                    sdxl_home["prompts"], "--config", sdxl_home["config"], "--algo", "ddpo", "--out", run, "-q")
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["provenance"]["family"] == "sdxl"
    assert saved["config"]["sample"]["guidance"] == 5.0 and saved["config"]["optim"]["gradient_checkpointing"]  # SDXL preset
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["epoch_0000.png", "epoch_0001.png", "epoch_0002.png"]
    assert Image.open(run / "samples" / "epoch_0002.png").size == (128, 64)  # 1 prompt x 2 seeds of 64 px
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    kohya, diffusers_dir = tmp_path / "lora.safetensors", tmp_path / "lora-diffusers"
    for fmt, out in (("kohya", kohya), ("diffusers", diffusers_dir)):
        result = invoke("export-lora", run, "--format", fmt, "--out", out)
        assert result.exit_code == 0, result.output
    with safe_open(str(kohya), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert {k.split("_")[1] for k in keys} == {"unet", "te1", "te2"} and any("input_blocks" in k for k in keys)

    args = ["-p", PROMPTS[0], "--seed", 3, "--steps", 2, "--guidance", 4.0, "--json", "--no-pool"]
    cli = invoke("generate", "--model", sdxl_home["model"], "--lora", run, *args, "--out", tmp_path / "cli")
    assert cli.exit_code == 0, cli.output
    pixels = png(json.loads(cli.stdout)["path"])
    base = invoke("generate", "--model", sdxl_home["model"], *args, "--out", tmp_path / "base")
    assert np.abs(png(json.loads(base.stdout)["path"]) - pixels).max() > 0  # the LoRA does something
    for i, path in enumerate((kohya, diffusers_dir, run / "lora", run / "lora_kohya.safetensors")):
        plain = StableDiffusionXLPipeline.from_pretrained(sdxl_home["model"], local_files_only=True)
        if path.is_file():
            plain.load_lora_weights(str(path.parent), weight_name=path.name)
        else:
            plain.load_lora_weights(str(path))
        [record] = generate(plain, [PROMPTS[0]], seed=3, steps=2, guidance=4.0, out_dir=tmp_path / f"plain{i}", progress=False)
        diff = np.abs(png(record.path) - pixels)  # the same weights by another route: at most a rounding flip
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99, path


def test_a_reward_whose_clip_cannot_take_the_images_is_one_line_exit_2(sdxl_home, rlft_home, tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "--model", sdxl_home["model"], "--reward", sdxl_home["toy"], "--prompts",
                    sdxl_home["prompts"], "--config", sdxl_home["config"], "--out", run)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the reward was trained on the toy CLIP"), lines
    assert "is an SDXL model" in lines[0] and "Traceback" not in result.output
    assert not run.exists() or not any(run.iterdir())


# -- kill -9, then --resume ---------------------------------------------------------------------------------------

def _train(home: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "RLFT_HOME": str(home), "OMP_NUM_THREADS": "2", "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "rlft", "train", "-q", *map(str, args)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_then_resume_equals_an_uninterrupted_run(sdxl_home, tmp_path):
    common = ["--model", sdxl_home["model"], "--reward", sdxl_home["real"], "--prompts", sdxl_home["prompts"],
              "--config", sdxl_home["config"], "--epochs", 3]
    full = _train(tmp_path / "home", *common, "--out", tmp_path / "full")
    killed = _train(tmp_path / "home", *common, "--out", tmp_path / "killed")
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 600
    while not ckpt.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ckpt.exists(), killed.communicate()[1][-2000:]
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    epoch = torch.load(ckpt, weights_only=False)["epoch"]
    assert epoch < 3  # killed mid-run
    resumed = _train(tmp_path / "home", "--resume", tmp_path / "killed")
    for proc in (full, resumed):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(ckpt, weights_only=False)
    assert a["epoch"] == b["epoch"] == 3 and set(a["lora"]) == {"unet", "text_encoder", "text_encoder_2"}
    assert all(torch.equal(a["lora"][p][k], b["lora"][p][k]) for p in a["lora"] for k in a["lora"][p])
    metrics = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
               for run in ("full", "killed")]
    assert [m["epoch"] for m in metrics[1]] == [1, 2, 3]
    assert [(m["loss"], m["reward_mean"]) for m in metrics[0]] == [(m["loss"], m["reward_mean"]) for m in metrics[1]]
