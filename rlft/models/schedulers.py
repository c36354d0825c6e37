"""Sampler names: our short `--scheduler` names, the diffusers class behind each, and A1111's name for it.

A1111 writes its sampler name into every PNG (`Sampler: DPM++ 2M Karras`); we write the same names, so
other tools read our images' settings and we read theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefs.errors import NotFoundError


@dataclass(frozen=True)
class Sampler:
    """One entry of the registry."""

    cls: str  # diffusers scheduler class name
    a1111: str  # the name AUTOMATIC1111 shows and writes for the same sampler
    kwargs: dict = field(default_factory=dict)  # overrides on top of the model's own scheduler config


SAMPLERS: dict[str, Sampler] = {
    "ddim": Sampler("DDIMScheduler", "DDIM"),
    "pndm": Sampler("PNDMScheduler", "PLMS", {"skip_prk_steps": True}),  # SD 1.x's default; A1111 calls it PLMS
    "euler": Sampler("EulerDiscreteScheduler", "Euler"),
    "euler_a": Sampler("EulerAncestralDiscreteScheduler", "Euler a"),
    "heun": Sampler("HeunDiscreteScheduler", "Heun"),
    "lms": Sampler("LMSDiscreteScheduler", "LMS"),
    "dpm2": Sampler("KDPM2DiscreteScheduler", "DPM2"),
    "dpm2_a": Sampler("KDPM2AncestralDiscreteScheduler", "DPM2 a"),
    "dpm++": Sampler("DPMSolverMultistepScheduler", "DPM++ 2M", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "dpm++_karras": Sampler("DPMSolverMultistepScheduler", "DPM++ 2M Karras", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "dpm++_sde": Sampler("DPMSolverMultistepScheduler", "DPM++ 2M SDE", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": False}),
    "unipc": Sampler("UniPCMultistepScheduler", "UniPC"),
    # The flow-matching families' (SD3, FLUX) Euler on the flow's ODE; Forge and ComfyUI call it Euler too.
    "flow_euler": Sampler("FlowMatchEulerDiscreteScheduler", "Euler"),
}
ALIASES = {"plms": "pndm", "dpm++_2m": "dpm++", "dpmpp": "dpm++", "euler-a": "euler_a", "euler_ancestral": "euler_a"}


def resolve(name: str) -> str:
    """The registry key for `name` (case-insensitive, aliases and A1111 names accepted)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in SAMPLERS:
        return key
    for k, s in SAMPLERS.items():
        if s.a1111.lower() == key:
            return k
    raise NotFoundError(f"unknown scheduler {name!r}; choose one of: {', '.join(SAMPLERS)}")


def make_scheduler(name: str, base_config):
    """A new scheduler of kind `name`, keeping the model's noise schedule from `base_config`."""
    import diffusers

    sampler = SAMPLERS[resolve(name)]
    return getattr(diffusers, sampler.cls).from_config(base_config, **sampler.kwargs)


def is_flow(name: str) -> bool:
    """Whether the sampler `name` integrates a flow-matching model's ODE (the others are noise-prediction samplers)."""
    return SAMPLERS[resolve(name)].cls.startswith("FlowMatch")


def check_fits(name: str, family) -> None:
    """UserError unless the sampler `name` runs models of `family` (flow samplers for flow models only)."""
    from prefs.errors import UserError

    if is_flow(name) != family.flow:
        fitting = [k for k in SAMPLERS if is_flow(k) == family.flow]
        raise UserError(f"the sampler {name!r} does not run {family.title} models; choose one of: {', '.join(fitting)}")


def set_scheduler(pipe, name: str | None):
    """Swap the pipeline's scheduler for `name` (None keeps the model's own); returns the pipeline."""
    if name:
        from rlft.models.families import family_of_pipeline

        check_fits(name, family_of_pipeline(pipe))
        pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    return pipe


def a1111_name(scheduler) -> str:
    """A1111's sampler name for a diffusers scheduler instance (its class name when A1111 has none)."""
    cls = type(scheduler).__name__
    config = scheduler.config
    for sampler in SAMPLERS.values():
        if sampler.cls == cls and all(config.get(k) == v for k, v in sampler.kwargs.items() if k != "skip_prk_steps"):
            return sampler.a1111
    return cls
