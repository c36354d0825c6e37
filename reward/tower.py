"""The CLIP image tower a reward reads its images with: frozen (the default, embeddings cached on disk), or tuned on
the judgements, as PickScore and HPSv2 tune theirs.

`Tower` wraps an open_clip ViT image tower and the CLIP's tensor preprocessing, in one of three modes:
  - `none`: the frozen tower itself (shared with the loaded CLIP, nothing to save);
  - `lora`: a copy with LoRA adapters (peft) on every block's attention and MLP; the adapters are trained;
  - `blocks`: a copy whose last N residual blocks, final norm and projection are trained.
and gives the features the reward heads read (`output`):
  - `pooled`: the L2-normalised joint embedding, N x D (what the cached path stores);
  - `tokens`: N x (1 + L) x D: that embedding first, then the L patch tokens after the final norm, projected into
    the joint space (the grid the `patch` head reads *where* and *how big* from).

A tower is split where its trainable part starts (`prefix` then `suffix`): the frozen prefix runs once per image
while tuning (`reward.tune` keeps its output), so tuning the last block of a 4-block tower costs about a quarter
of tuning them all. Saved as `tower.safetensors` in the version folder: only the trainable tensors (LoRA
matrices, or the tuned blocks), loaded onto a fresh copy of the frozen tower named by the version's CLIP.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F

from prefs.errors import UserError

TOWER_MODES = ("none", "lora", "blocks")
OUTPUTS = ("pooled", "tokens")
LORA_TARGETS = ("attn", "c_fc", "c_proj")  # every block's attention (in and out projections) and MLP


def _vision_transformer(visual, what: str):
    """The open_clip ViT image tower, or a UserError saying which towers `what` needs."""
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise UserError(f"{what} needs a ViT image tower (open_clip VisionTransformer); this CLIP's is a "
                        f"{type(visual).__name__}: use --tune none with --head mlp or linear")
    if getattr(visual, "attn_pool", None) is not None:
        raise UserError(f"{what} needs a ViT image tower without an attention pooler (CoCa-style towers are not supported)")
    return visual


def check_tower(clip, mode: str, output: str, blocks: int = 1) -> int:
    """UserError when `clip`'s image tower cannot be used this way; else its number of residual blocks (0 when
    the frozen pooled embedding is all that is read). Cheap: run before any embedding work."""
    if mode not in TOWER_MODES:
        raise UserError(f"unknown tower mode {mode!r}; valid: {', '.join(TOWER_MODES)}")
    if output not in OUTPUTS:
        raise UserError(f"unknown tower output {output!r}; valid: {', '.join(OUTPUTS)}")
    if mode == "none" and output == "pooled":
        return 0
    visual = _vision_transformer(clip.model.visual, "--head patch" if mode == "none" else f"--tune {mode}")
    n_blocks = len(visual_blocks(visual))
    if mode == "blocks" and not 1 <= blocks <= n_blocks:
        raise UserError(f"--blocks must be in 1..{n_blocks} (the tower's residual blocks), got {blocks}")
    return n_blocks


class Tower(torch.nn.Module):
    """A CLIP image tower as the reward's feature extractor: `tower(pixels)` -> features (see the module docstring).

    `spec` is the tower's provenance dict (`mode`, `output`, `lora_rank`, `lora_alpha`, `blocks`): what
    `reward.json` records under "tower" and what rebuilds the same tower on load.
    """

    def __init__(self, clip, mode: str = "none", output: str = "pooled", lora_rank: int = 8,
                 lora_alpha: float | None = None, blocks: int = 1):
        super().__init__()
        self.mode, self.output = mode, output
        visual = clip.model.visual
        n_blocks = check_tower(clip, mode, output, blocks)
        self.lora_rank = int(lora_rank) if mode == "lora" else None
        self.lora_alpha = float(lora_alpha if lora_alpha is not None else 2 * lora_rank) if mode == "lora" else None
        self.blocks = int(blocks) if mode == "blocks" else None
        if mode == "none":
            # The loaded CLIP's own tower and preprocessing, not registered as submodules: moving or saving this
            # module must not touch the CLIP every other user in the process shares. Nothing here is trained.
            object.__setattr__(self, "visual", visual)
            object.__setattr__(self, "preprocess", clip.preprocess)
            self.split = n_blocks  # every block is in the frozen prefix
        else:
            self.preprocess = copy.deepcopy(clip.preprocess)
            self.visual = copy.deepcopy(visual)
            self.visual.requires_grad_(False)
            if mode == "lora":
                from peft import LoraConfig, inject_adapter_in_model

                config = LoraConfig(r=self.lora_rank, lora_alpha=self.lora_alpha, lora_dropout=0.0,
                                    target_modules=list(LORA_TARGETS))
                self.visual = inject_adapter_in_model(config, self.visual)
                for name, p in self.visual.named_parameters():
                    p.requires_grad_("lora_" in name)
                self.split = 0
            else:
                self.split = n_blocks - self.blocks
                for block in visual_blocks(self.visual)[self.split:]:
                    block.requires_grad_(True)
                self.visual.ln_post.requires_grad_(True)
                if isinstance(self.visual.proj, torch.nn.Parameter):
                    self.visual.proj.requires_grad_(True)
        self.train_names = sorted(n for n, p in self.visual.named_parameters() if p.requires_grad)

    @property
    def spec(self) -> dict:
        return {"mode": self.mode, "output": self.output, "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha,
                "lora_targets": list(LORA_TARGETS) if self.mode == "lora" else None, "blocks": self.blocks}

    @classmethod
    def from_spec(cls, clip, spec: dict) -> "Tower":
        return cls(clip, spec.get("mode", "none"), spec.get("output", "pooled"), spec.get("lora_rank") or 8,
                   spec.get("lora_alpha"), spec.get("blocks") or 1)

    # -- features -----------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features of float images N x 3 x H x W in [0, 1] (any size); differentiable in the pixels."""
        x = self.preprocess(images.to(self.preprocess.mean.device, torch.float32))
        return self.suffix(self.prefix(x))

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed images -> the hidden tokens where the trainable part starts (N x (1 + L) x width; for a
        frozen tower with pooled output: the pooled features themselves)."""
        v = self.visual
        if self.mode == "none" and self.output == "pooled":
            return F.normalize(v(x).float(), dim=-1)
        h = v._embeds(x)
        for block in visual_blocks(v)[: self.split]:
            h = _run_block(v, block, h)
        return h

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        """The hidden tokens from `prefix` -> features."""
        v = self.visual
        if self.mode == "none" and self.output == "pooled":
            return h
        for block in visual_blocks(v)[self.split:]:
            h = _run_block(v, block, h)
        pooled, tokens = v._pool(h)
        if v.proj is not None:
            pooled, tokens = pooled @ v.proj, tokens @ v.proj
        pooled = F.normalize(pooled.float(), dim=-1)
        if self.output == "pooled":
            return pooled
        return torch.cat([pooled[:, None], tokens.float()], dim=1)

    # -- weights ------------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        params = dict(self.visual.named_parameters())
        return [params[n] for n in self.train_names]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The tuned tensors by name (empty for a frozen tower): what `tower.safetensors` holds."""
        params = dict(self.visual.named_parameters())
        return {n: params[n].detach().cpu().contiguous() for n in self.train_names}

    def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        """Put tuned tensors back; UserError when they are not this tower's (another mode, rank or CLIP)."""
        if sorted(state) != self.train_names:
            missing, extra = set(self.train_names) - set(state), set(state) - set(self.train_names)
            raise UserError(f"the saved tower does not fit a {self.mode} tower of this CLIP ({len(missing)} tensors "
                            f"missing, {len(extra)} unexpected, e.g. {sorted(missing or extra)[:2]}); the version "
                            "folder is damaged or was written for another CLIP")
        params = dict(self.visual.named_parameters())
        with torch.no_grad():
            for n, t in state.items():
                if params[n].shape != t.shape:
                    raise UserError(f"the saved tower tensor {n} has shape {tuple(t.shape)}, this tower's is "
                                    f"{tuple(params[n].shape)}: the version was written for another CLIP")
                params[n].copy_(t)


def visual_blocks(visual) -> torch.nn.ModuleList:
    return visual.transformer.resblocks


def _run_block(visual, block, h: torch.Tensor) -> torch.Tensor:
    """One residual block on batch-first tokens (open_clip towers may run sequence-first inside)."""
    if getattr(visual.transformer, "batch_first", True):
        return block(h)
    return block(h.transpose(0, 1)).transpose(0, 1)


def save_tower(path: str | os.PathLike, tower: Tower) -> None:
    from safetensors.torch import save_file

    save_file(tower.trainable_state(), os.fspath(path))


def load_tower(clip, spec: dict, path: str | os.PathLike | None) -> Tower:
    """The tower a version describes (`spec`, from its reward.json), with its tuned tensors from `path`."""
    tower = Tower.from_spec(clip, spec)
    if tower.train_names:
        from safetensors.torch import load_file

        if path is None or not os.path.isfile(path):
            raise UserError(f"the reward's tuned tower {path} is missing: the version folder is incomplete")
        tower.load_trainable(load_file(os.fspath(path)))
    tower.requires_grad_(False)
    return tower.eval()
