"""Reward heads: map a CLIP image embedding (and optionally the prompt's text embedding) to a utility r.

P(a beats b) = sigmoid(r(a) - r(b)). Every head standardises its input with the training pool's per-dimension
mean and std (buffers saved with the weights), so one L2 strength suits CLIPs whose embeddings vary a lot or
a little, and ends with an `offset` buffer that centres utilities on the training pool (only differences
matter to Bradley-Terry; centring makes ensemble members comparable, so their spread is real disagreement).

- `linear`: r = w . f + b, the classic reward-model probe.
- `mlp`: two hidden layers with GELU and dropout.
- `laion`: a LAION improved-aesthetic-predictor head (`--prior laion:PATH`), fine-tuned from its weights,
  times a learnt scale (its 1-10 scores are not on the logit scale). No standardisation: it expects raw
  L2-normalised embeddings.
- `residual`: a prior's score times a weight plus a personal head (`--prior VERSION|pickscore|...`, see
  `reward.prior`): r = w * s + personal(x); it reads the prior's score `s` beside the embedding.
- `patch`: reads the patch tokens as well as the pooled embedding (a `reward.tower.Tower` with output
  "tokens"), so *where* and *how big* are visible: see `PatchHead`.
Prompt conditioning (`prompt=True`): the features are [x, x * t] (image, and image times prompt embedding),
so the head can learn which image directions matter for which prompts (for `patch`, of the pooled embedding).
"""

from __future__ import annotations

import torch
from torch import nn

HEADS = ("linear", "mlp", "patch")
TOKEN_HEADS = ("patch",)  # heads that read N x (1 + L) x D token features, not N x D embeddings


class Head(nn.Module):
    """Base: standardise -> features -> net; `config` rebuilds it (`build_head(**config)`)."""

    def __init__(self, dim: int, prompt: bool = False):
        super().__init__()
        self.dim, self.prompt = int(dim), bool(prompt)
        n_in = 2 * dim if prompt else dim
        self.register_buffer("mu", torch.zeros(n_in))
        self.register_buffer("sigma", torch.ones(n_in))
        self.register_buffer("offset", torch.zeros(()))

    def features(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        if self.prompt:
            if t is None:
                t = torch.zeros_like(x)  # no prompt: the unconditional part of the reward
            x = torch.cat([x, x * t], dim=-1)
        return (x - self.mu) / self.sigma

    def set_standardisation(self, x: torch.Tensor, t: torch.Tensor | None) -> None:
        self.mu.zero_()
        self.sigma.fill_(1)
        f = self.features(x, t)
        self.mu.copy_(f.mean(0))
        self.sigma.copy_(f.std(0).clamp_min(1e-4) if len(f) > 1 else torch.ones_like(self.sigma))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.features(x, t)).squeeze(-1) - self.offset

    def penalty(self) -> torch.Tensor:
        """Sum of squared weights (not biases): the L2 term of the training loss."""
        return sum((p**2).sum() for n, p in self.net.named_parameters() if n.endswith("weight"))


class LinearHead(Head):
    kind = "linear"

    def __init__(self, dim: int, prompt: bool = False):
        super().__init__(dim, prompt)
        self.net = nn.Linear(len(self.mu), 1)
        nn.init.zeros_(self.net.weight)
        nn.init.zeros_(self.net.bias)

    @property
    def config(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "prompt": self.prompt}


class MLPHead(Head):
    kind = "mlp"

    def __init__(self, dim: int, prompt: bool = False, hidden: int = 128, dropout: float = 0.1):
        super().__init__(dim, prompt)
        self.hidden, self.dropout = int(hidden), float(dropout)
        self.net = nn.Sequential(
            nn.Linear(len(self.mu), hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2), nn.GELU(), nn.Linear(hidden // 2, 1),
        )

    @property
    def config(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "prompt": self.prompt, "hidden": self.hidden, "dropout": self.dropout}


class PatchHead(Head):
    """Attention pooling over the patch grid with each patch's position: *where* and *how big*, not only *what*.

    Input N x (1 + L) x D: the pooled embedding, then L patch tokens on a square grid (`Tower` output "tokens").
    Each of `queries` learnt queries scores every patch (one logit per patch); its softmax over the grid weighs
    (a) the patches' features, reduced to `reduced` channels, and (b) the moments of their grid positions (x, y,
    x^2, y^2, xy in [-1, 1]: the centroid and spread of what it attends to, i.e. where and how big), and the mean
    sigmoid of its logits is the share of the grid it covers (area). An MLP as `mlp`'s reads those beside the
    pooled embedding (with the prompt terms when prompt-conditioned). Patch tokens are standardised per channel
    with the training pool's statistics (buffers), the pooled part as every head's.
    """

    kind = "patch"
    MOMENTS = 5

    def __init__(self, dim: int, prompt: bool = False, hidden: int = 128, dropout: float = 0.1, queries: int = 4,
                 reduced: int = 16):
        super().__init__(dim, prompt)
        self.hidden, self.dropout, self.queries, self.reduced = int(hidden), float(dropout), int(queries), int(reduced)
        self.register_buffer("tok_mu", torch.zeros(dim))
        self.register_buffer("tok_sigma", torch.ones(dim))
        self.score = nn.Linear(dim, queries)
        self.value = nn.Linear(dim, reduced)
        n_in = len(self.mu) + queries * (reduced + self.MOMENTS + 1)
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2), nn.GELU(), nn.Linear(hidden // 2, 1),
        )

    def set_standardisation(self, x: torch.Tensor, t: torch.Tensor | None) -> None:
        super().set_standardisation(x[:, 0], t)
        tok = x[:, 1:].reshape(-1, x.shape[-1])
        self.tok_mu.copy_(tok.mean(0))
        self.tok_sigma.copy_(tok.std(0).clamp_min(1e-4) if len(tok) > 1 else torch.ones_like(self.tok_sigma))

    @staticmethod
    def moments(n_patches: int, device=None) -> torch.Tensor:
        """L x 5 position features of a square grid's patches (row-major, as ViT tokens): x, y, x^2, y^2, xy."""
        g = int(round(n_patches ** 0.5))
        if g * g != n_patches:
            raise ValueError(f"the patch head needs a square grid of patch tokens, got {n_patches}")
        c = (torch.arange(g, device=device, dtype=torch.float32) + 0.5) / g * 2 - 1
        y, x = torch.meshgrid(c, c, indexing="ij")
        x, y = x.flatten(), y.flatten()
        return torch.stack([x, y, x * x, y * y, x * y], dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"the patch head reads token features N x (1 + L) x D, got shape {tuple(x.shape)}")
        tok = (x[:, 1:] - self.tok_mu) / self.tok_sigma
        logits = self.score(tok)  # N x L x Q
        att = logits.softmax(dim=1)
        pooled_values = torch.einsum("nlq,nlr->nqr", att, self.value(tok)).flatten(1)
        where = torch.einsum("nlq,lm->nqm", att, self.moments(tok.shape[1], tok.device)).flatten(1)
        area = torch.sigmoid(logits).mean(1)
        f = torch.cat([self.features(x[:, 0], t), pooled_values, where, area], dim=-1)
        return self.net(f).squeeze(-1) - self.offset

    def penalty(self) -> torch.Tensor:
        return super().penalty() + (self.score.weight ** 2).sum() + (self.value.weight ** 2).sum()

    @property
    def config(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "prompt": self.prompt, "hidden": self.hidden, "dropout": self.dropout,
                "queries": self.queries, "reduced": self.reduced}


class LaionPriorHead(nn.Module):
    """A LAION aesthetic head fine-tuned as a reward: r = scale * laion(x) - offset."""

    kind = "laion"

    def __init__(self, layers: nn.Sequential, prior_path: str | None = None):
        super().__init__()
        self.layers = layers
        self.prior_path = prior_path
        self.dim = layers[0].in_features
        self.prompt = False
        self.scale = nn.Parameter(torch.ones(()))
        self.register_buffer("offset", torch.zeros(()))
        self.register_buffer("prior", torch.cat([p.detach().flatten() for p in layers.parameters()]).clone())

    def set_standardisation(self, x, t) -> None:  # LAION heads expect raw normalised embeddings
        pass

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.scale * self.layers(x).squeeze(-1) - self.offset

    def penalty(self) -> torch.Tensor:
        """Squared distance from the prior's weights: personalise the general aesthetic, don't forget it."""
        now = torch.cat([p.flatten() for p in self.layers.parameters()])
        return ((now - self.prior) ** 2).sum()

    @property
    def config(self) -> dict:
        keys = [k for k in self.layers.state_dict()]
        return {"kind": self.kind, "dim": self.dim, "prompt": False, "layer_keys": keys, "prior_path": self.prior_path}


class PriorResidualHead(nn.Module):
    """r = w * s + personal(x, t) - offset: a prior's score `s` times a weight, plus a personal head that starts at 0.

    `w` is learnt or fixed (`learn_weight` False). `penalty` is the personal head's (the fit scales it by `--l2`), so
    with few judgements the reward is the prior and the personal part grows only where judgements speak;
    `weight_penalty` is a Gaussian prior on w around `start` of standard deviation 1 / `scale` (the fit uses
    |start|): much weaker than the personal part's, so the weight follows the judgements sooner, down to 0 or below
    for a person who disagrees with the prior.
    """

    kind = "residual"

    def __init__(self, personal: nn.Module, weight: float = 1.0, learn_weight: bool = True, scale: float = 1.0):
        super().__init__()
        self.personal = personal
        self.dim, self.prompt = personal.dim, personal.prompt
        self.learn_weight = bool(learn_weight)
        self.weight = nn.Parameter(torch.tensor(float(weight)), requires_grad=self.learn_weight)
        self.register_buffer("start", torch.tensor(float(weight)))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("offset", torch.zeros(()))

    def set_standardisation(self, x: torch.Tensor, t: torch.Tensor | None) -> None:
        self.personal.set_standardisation(x, t)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, s: torch.Tensor | None = None) -> torch.Tensor:
        if s is None:
            raise ValueError("a reward with a prior needs the prior's scores of the images (s)")
        return self.weight * s.to(x.dtype) + self.personal(x, t) - self.offset

    def penalty(self) -> torch.Tensor:
        return self.personal.penalty()

    def weight_penalty(self) -> torch.Tensor:
        if not self.learn_weight:
            return torch.zeros(())
        return ((self.weight - self.start) * self.scale) ** 2

    @property
    def config(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "prompt": self.prompt, "personal": self.personal.config,
                "learn_weight": self.learn_weight}


def build_head(kind: str, dim: int, prompt: bool = False, **kw) -> nn.Module:
    """A fresh head from its `config` dict (the LAION kind needs `state_dict`-shaped `layer_keys`)."""
    if kind == "linear":
        return LinearHead(dim, prompt)
    if kind == "mlp":
        return MLPHead(dim, prompt, hidden=kw.get("hidden", 128), dropout=kw.get("dropout", 0.1))
    if kind == "patch":
        return PatchHead(dim, prompt, hidden=kw.get("hidden", 128), dropout=kw.get("dropout", 0.1),
                         queries=kw.get("queries", 4), reduced=kw.get("reduced", 16))
    if kind == "residual":
        personal = dict(kw["personal"])
        return PriorResidualHead(build_head(personal.pop("kind"), **personal), learn_weight=kw.get("learn_weight", True))
    if kind == "laion":
        from reward.laion import build_sequential

        # Shapes come from the saved weights; build with placeholders of the right index layout.
        return LaionPriorHead(build_sequential(kw["_state"]), kw.get("prior_path"))
    from prefs.errors import UserError

    raise UserError(f"unknown head {kind!r}; valid: {', '.join(HEADS)} (or --prior laion:PATH)")
