"""`rlft generate`: text to images, written as A1111-style PNGs and added to the preference pool."""

from __future__ import annotations

import json

import click

from rlft.cli.params import FINITE_FLOAT


@click.command("generate")
@click.option("--model", "-m", "model", default="toy", show_default=True, help="Built-in name, diffusers folder, single .safetensors/.ckpt, or hub repo id; SD 1.x, SDXL, SD3 or FLUX, told from its files.")
@click.option("--prompt", "-p", "prompt_texts", multiple=True, help="A prompt (repeat for several).")
@click.option("--prompts", "prompts_source", default=None, help="A text file (one prompt a line) or a named set: parti, imagereward, ddpo-animals, ...")
@click.option("-n", "n", type=int, default=1, show_default=True, help="Images per prompt.")
@click.option("--seed", type=int, default=None, help="Base seed; image k gets seed+k. Default: random (recorded).")
@click.option("--steps", type=int, default=20, show_default=True, help="Denoising steps.")
@click.option("--guidance", "--cfg", "guidance", type=FINITE_FLOAT, default=None, help="Classifier-free guidance scale; FLUX: its distilled guidance [default: the model's recommended, else 7.5; toy: 3; FLUX 3.5].")
@click.option("--negative-prompt", default="", help="Negative prompt for every image.")
@click.option("--width", type=int, default=None, help="Width in pixels, a multiple of 8; SDXL: of 64; SD3, FLUX: of 16 (default: the model's; SDXL 1024).")
@click.option("--height", type=int, default=None, help="Height in pixels, a multiple of 8; SDXL: of 64; SD3, FLUX: of 16 (default: the model's; SDXL 1024).")
@click.option("--scheduler", default=None, help="Sampler: ddim, euler, euler_a, dpm++, dpm++_karras, pndm, ...; SD3, FLUX: flow_euler (default: the model's).")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Images per forward pass (speed/memory only).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Output folder [default: <home>/outputs/YYYY-MM-DD].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image on stdout.")
@click.option("--no-pool", is_flag=True, help="Do not add the images to the preference pool.")
@click.option("--lora", default=None, help="A LoRA to apply: a training run (latest, t0003, a run folder), a diffusers LoRA folder, or a diffusers or kohya/A1111 .safetensors; made for the model's family.")
@click.option("--config", "config", type=click.Path(), default=None, help="For a single-file model: a diffusers folder with its configs.")
@click.option("--device", default=None, help="cuda, cpu, mps, ... (default: the best available).")
@click.option("--dtype", default=None, help="fp32, fp16 or bf16 (default: bf16/fp16 on GPU, fp32 on CPU).")
@click.option("--aesthetic", "aesthetic", type=click.Path(), default=None, help="An aesthetic embedding (.pt, e.g. from `rlft embed`): personalise the text encoder of its CLIP toward it per prompt (SDXL: the encoder whose space it is in).")
@click.option("--aesthetic-steps", type=int, default=5, show_default=True, help="Adam steps per prompt toward the embedding.")
@click.option("--aesthetic-lr", type=FINITE_FLOAT, default=1e-4, show_default=True, help="Adam learning rate of those steps.")
@click.option("--aesthetic-weight", type=FINITE_FLOAT, default=0.9, show_default=True, help="Blend of personalised and original text features (0..1).")
@click.option("--aesthetic-clip", default=None, help="CLIP the embedding lives in [default: from its JSON sidecar; ViT-L-14/openai for 768-d].")
def generate(model, prompt_texts, prompts_source, n, seed, steps, guidance, negative_prompt, width, height,
             scheduler, batch_size, out_dir, as_json, no_pool, lora, config, device, dtype,
             aesthetic, aesthetic_steps, aesthetic_lr, aesthetic_weight, aesthetic_clip):
    """Generate images from text prompts with a Stable Diffusion model (SD 1.x, SDXL, SD3) or FLUX.

    Every PNG carries its settings in AUTOMATIC1111's `parameters` chunk (with the model's name and hash);
    the same settings and seed give the same pixels.

    SDXL's trained sizes (--width x --height): 1024x1024, 1152x896, 896x1152, 1216x832, 832x1216,
    1344x768, 768x1344, 1536x640, 640x1536.
    """
    from prefs.errors import UserError
    from rlft.models.generate import GenerateSettings, check_negative, validate_prompts
    from rlft.models.generate import generate as run
    from rlft.models.pipeline import load_pipeline, model_family, quiet_libraries, recommended_settings, resolve_model
    from rlft.models.schedulers import check_fits
    from rlft.models.schedulers import resolve as resolve_sampler
    from rlft.models.sizes import check_size

    # Check everything cheap before loading a model, so bad input fails fast and writes nothing.
    source = resolve_model(model)
    family = model_family(source, config)  # from the files alone (None: a hub model not downloaded yet)
    if guidance is None:
        guidance = recommended_settings(source).get("guidance", 3.5 if family is not None and family.name == "flux" else 7.5)
    settings = GenerateSettings(n=n, seed=seed, steps=steps, guidance=guidance, negative_prompt=negative_prompt,
                                width=width, height=height, batch_size=batch_size)
    if prompt_texts and prompts_source:
        raise UserError("give --prompt or --prompts, not both")
    if prompts_source:
        from rlft.prompts import load_prompts

        prompts = load_prompts(prompts_source)
    else:
        prompts = validate_prompts(prompt_texts)
    if any(not p.strip() for p in prompts):
        raise UserError("a prompt is empty; give some text")
    if scheduler:
        resolve_sampler(scheduler)
    if family is not None:
        check_size(family, width, height)
        check_negative(family, negative_prompt)
        if aesthetic and family.flow:
            raise UserError(f"--aesthetic personalises SD 1.x and SDXL text encoders; {family.title} models are not "
                            "supported by it")
        if scheduler:
            check_fits(scheduler, family)

    if not no_pool:  # a home or database that cannot be written fails now, not after loading the model
        from prefs import open_store

        open_store().close()

    quiet_libraries()
    pipe = load_pipeline(model, device=device, dtype=dtype, scheduler=scheduler, config=config)
    if lora:
        from rlft.models.lora import apply_lora, lora_name

        apply_lora(pipe, lora)
        lora = lora_name(lora)
    conditioner = None
    if aesthetic:
        from rlft.models.aesthetic import aesthetic_conditioner

        conditioner = aesthetic_conditioner(pipe, aesthetic, steps=aesthetic_steps, lr=aesthetic_lr,
                                            weight=aesthetic_weight, clip_spec=aesthetic_clip)

    def emit(record):
        if as_json:
            click.echo(json.dumps(record.to_json(), ensure_ascii=False))

    if no_pool:
        records = run(pipe, prompts, settings, out_dir=out_dir, lora=lora, on_image=emit, conditioner=conditioner)
    else:
        from prefs import open_store

        with open_store() as store:
            records = run(pipe, prompts, settings, out_dir=out_dir, lora=lora, store=store, on_image=emit, conditioner=conditioner)
    if not as_json:
        where = records[0].path.parent if records else out_dir
        pooled = "" if no_pool else ", added to the pool"
        click.echo(f"wrote {len(records)} image{'s' * (len(records) != 1)} to {where}{pooled}")

