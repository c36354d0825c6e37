"""rlft: steer a text-to-image diffusion model toward one person's taste.

Public API (imported lazily so `import rlft` stays cheap):
    load_pipeline(spec, ...)  -> diffusers StableDiffusionPipeline
    load_clip(spec, ...)      -> (model, preprocess, tokenizer) from open_clip
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load_pipeline", "load_clip", "__version__"]


def __getattr__(name):
    if name == "load_pipeline":
        from rlft.models.pipeline import load_pipeline

        return load_pipeline
    if name == "load_clip":
        from rlft.models.clip import load_clip

        return load_clip
    raise AttributeError(f"module 'rlft' has no attribute {name!r}")
