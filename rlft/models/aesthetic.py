"""`rlft generate --aesthetic`: an aesthetic embedding conditions the text encoder(s) of its own CLIP, per family.

An aesthetic embedding (`reward.aesthetic`) is a vector in one CLIP's joint image-text space. Aesthetic
gradients personalise the text encoder of that CLIP toward it, per prompt. SD 1.x has one text encoder
(CLIP ViT-L/14's), handled by `reward.aesthetic.AestheticConditioner`. SDXL has two: CLIP ViT-L/14's
(768-d space, projection not shipped with the model) and OpenCLIP ViT-bigG/14's (1280-d, its projection
is part of the model). An embedding personalises the encoder(s) whose space it lives in, told by its
dimension (768: the first, 1280: the second); the other encoder's states pass unchanged. The second
encoder's pooled output (which SDXL's UNet also reads) is blended like its hidden states.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from prefs.errors import UserError


class SDXLAestheticConditioner:
    """`conditioner(prompts) -> {"prompt_embeds", "pooled_prompt_embeds"}`: aesthetic gradients on SDXL.

    With weight 0 (or no steps) it returns exactly what `StableDiffusionXLPipeline.encode_prompt` computes.
    """

    ENCODERS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))

    def __init__(self, pipe, embedding: torch.Tensor, steps: int = 5, lr: float = 1e-4, weight: float = 0.9,
                 clip_spec: str | None = None, name: str | None = None):
        from reward.aesthetic import text_projection, text_space_dim

        if steps < 0 or lr < 0 or not 0 <= weight <= 1:
            raise UserError(f"need --aesthetic-steps >= 0, --aesthetic-lr >= 0 and 0 <= --aesthetic-weight <= 1; "
                            f"got {steps}, {lr}, {weight}")
        self.pipe, self.steps, self.lr, self.weight, self.name = pipe, int(steps), float(lr), float(weight), name
        self.embedding = F.normalize(embedding.float().reshape(1, -1), dim=-1)
        d = self.embedding.shape[-1]
        spaces = {enc: text_space_dim(getattr(pipe, enc)) for enc, _ in self.ENCODERS}
        # encoder name -> its hidden -> joint-space projection (hidden x D)
        self.targets = {enc: text_projection(getattr(pipe, enc), clip_spec, d) for enc, dim in spaces.items() if dim == d}
        if not self.targets:
            a, b = spaces["text_encoder"], spaces["text_encoder_2"]
            raise UserError(f"the aesthetic embedding is {d}-d, but this SDXL model's text encoders work in {a}-d "
                            f"(the first, CLIP ViT-L/14 for SDXL) and {b}-d (the second, OpenCLIP ViT-bigG/14) spaces: "
                            "build the embedding with one of those CLIPs (`rlft embed --clip ...`)")
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def parameters(self) -> dict:
        """Settings to record with each image (A1111's names, and which encoders were personalised)."""
        return {"Aesthetic embedding": self.name, "Aesthetic steps": self.steps, "Aesthetic LR": self.lr,
                "Aesthetic weight": self.weight, "Aesthetic encoders": "+".join(sorted(self.targets))}

    def _encode(self, encoder, ids) -> tuple[torch.Tensor, torch.Tensor | None]:
        # SDXL reads the penultimate layer's states, and the second encoder's projected pooled output
        out = encoder(ids, output_hidden_states=True)
        pooled = out[0] if out[0].ndim == 2 else None
        return out.hidden_states[-2], pooled

    def _features(self, encoder, ids, proj) -> torch.Tensor:
        out = encoder(ids)
        pooled = out.text_embeds if getattr(out, "text_embeds", None) is not None else out.pooler_output @ proj
        return F.normalize(pooled.float(), dim=-1)

    def personalise(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(states 1 x 77 x (w1 + w2), pooled 1 x P) for one prompt."""
        if prompt in self._cache:
            return self._cache[prompt]
        states, pooled = [], None
        for enc_name, tok_name in self.ENCODERS:
            enc, tok = getattr(self.pipe, enc_name), getattr(self.pipe, tok_name)
            ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(enc.device)
            with torch.no_grad():
                h, p = self._encode(enc, ids)
            if enc_name in self.targets and self.steps and self.lr and self.weight:
                work = copy.deepcopy(enc).float().train(False).requires_grad_(True)
                proj, target = self.targets[enc_name].to(enc.device), self.embedding.to(enc.device)
                opt = torch.optim.Adam(work.parameters(), lr=self.lr)
                with torch.enable_grad():
                    for _ in range(self.steps):
                        opt.zero_grad(set_to_none=True)
                        loss = -(self._features(work, ids, proj) * target).sum()
                        loss.backward()
                        opt.step()
                with torch.no_grad():
                    h1, p1 = self._encode(work, ids)
                del work, opt
                h = ((1 - self.weight) * h.float() + self.weight * h1.float()).to(h.dtype)
                if p is not None:
                    p = ((1 - self.weight) * p.float() + self.weight * p1.float()).to(p.dtype)
            states.append(h)
            pooled = p if p is not None else pooled
        dtype = self.pipe.text_encoder_2.dtype
        result = torch.cat(states, dim=-1).to(dtype), pooled.to(dtype)
        self._cache[prompt] = result
        return result

    def __call__(self, prompts) -> dict[str, torch.Tensor]:
        parts = [self.personalise(p) for p in prompts]
        return {"prompt_embeds": torch.cat([s for s, _ in parts]), "pooled_prompt_embeds": torch.cat([p for _, p in parts])}


def aesthetic_conditioner(pipe, path: str | os.PathLike, steps: int = 5, lr: float = 1e-4, weight: float = 0.9,
                          clip_spec: str | None = None):
    """The aesthetic conditioner for `pipe`'s family from an embedding file (CLIP from `clip_spec`, else the
    file's sidecar JSON, else ViT-L-14/openai for 768-d embeddings, as `reward.aesthetic` decides)."""
    from reward.aesthetic import SD1_CLIP, conditioner_from_file, load_embedding, read_provenance
    from rlft.models.families import family_of_pipeline

    family = family_of_pipeline(pipe)
    if family.flow:
        raise UserError(f"--aesthetic personalises SD 1.x and SDXL text encoders; {family.title} models are not "
                        "supported by it")
    if family.name != "sdxl":
        return conditioner_from_file(pipe, path, steps=steps, lr=lr, weight=weight, clip_spec=clip_spec)
    emb = load_embedding(path)
    spec = clip_spec or read_provenance(path).get("clip_spec") or (SD1_CLIP if emb.shape[-1] == 768 else None)
    return SDXLAestheticConditioner(pipe, emb, steps=steps, lr=lr, weight=weight, clip_spec=spec, name=Path(path).stem)
