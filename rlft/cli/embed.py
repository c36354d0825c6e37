"""`rlft embed`: write an aesthetic embedding (taste.pt) from the reward's best images or a folder."""

from __future__ import annotations

import json

import click

from rlft.cli.params import FINITE_FLOAT


@click.command()
@click.option("--reward", "spec", default="latest", show_default=True, help="Reward version that ranks the pool.")
@click.option("--top-k", type=int, default=None, help="Use the K best-scoring pool images [default 50].")
@click.option("--min-score", type=FINITE_FLOAT, default=None, help="Use every pool image scoring at least S.")
@click.option("--from-dir", "from_dir", type=click.Path(), default=None, help="Instead: the mean of a folder of images you like.")
@click.option("--clip", default=None, help="CLIP for --from-dir [default: toy].")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .pt file (a JSON of provenance is written beside it).")
@click.option("--json", "as_json", is_flag=True, help="Print the provenance as JSON.")
def embed(spec, top_k, min_score, from_dir, clip, out, as_json):
    """Aesthetic embedding: a (1, D) float32 tensor the aesthetic-gradients method (and A1111's extension) loads."""
    from prefs.errors import UserError
    from reward.aesthetic import build_from_dir, build_from_reward, read_provenance, save_embedding

    if top_k is not None and min_score is not None:
        raise UserError("give --top-k or --min-score, not both")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {top_k}")
    if from_dir:
        emb, prov = build_from_dir(from_dir, clip or "toy", progress=not as_json)
    else:
        if clip:
            raise UserError("--clip applies to --from-dir; with --reward the reward's own CLIP is used")
        from prefs import open_store
        from reward.model import load

        model = load(spec)
        with open_store() as store:
            emb, prov = build_from_reward(model, store, top_k=top_k or 50, min_score=min_score, progress=not as_json,
                                          notice=lambda m: click.echo(f"notice: {m}", err=True))
    path = save_embedding(out, emb, prov)
    if as_json:
        click.echo(json.dumps({**read_provenance(path), "path": str(path)}))
    else:
        click.echo(f"wrote {path} ({len(prov['images'])} images, clip {prov['clip_spec']}) and {path.with_suffix('.json').name}")
