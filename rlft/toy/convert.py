"""Convert an open_clip CLIP text tower into a transformers `CLIPTextModel` (SD 1.x's text-encoder class).

SD 1.x conditions its UNet on the last hidden states of CLIP ViT-L/14's text tower; the toy world does the
same with its own CLIP, so text conditioning and CLIP image embeddings share one space. The mapping is
exact (same tokens in, same hidden states and pooled features out); `tests/test_toy_convert.py` checks it.
"""

from __future__ import annotations

import torch


def text_config_from_open_clip(clip):
    from transformers import CLIPTextConfig

    width = clip.token_embedding.weight.shape[1]
    blocks = clip.transformer.resblocks
    heads = blocks[0].attn.num_heads
    mlp = blocks[0].mlp.c_fc.out_features
    proj = clip.text_projection
    proj_dim = proj.shape[1] if isinstance(proj, torch.Tensor) else proj.out_features
    return CLIPTextConfig(
        vocab_size=clip.token_embedding.weight.shape[0],
        hidden_size=width,
        intermediate_size=mlp,
        num_hidden_layers=len(blocks),
        num_attention_heads=heads,
        max_position_embeddings=clip.positional_embedding.shape[0],
        hidden_act="gelu",  # open_clip's default nn.GELU (not quick_gelu, which OpenAI's weights use)
        layer_norm_eps=clip.ln_final.eps,
        projection_dim=proj_dim,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def _text_state_dict(clip) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {
        "text_model.embeddings.token_embedding.weight": clip.token_embedding.weight,
        "text_model.embeddings.position_embedding.weight": clip.positional_embedding,
        "text_model.final_layer_norm.weight": clip.ln_final.weight,
        "text_model.final_layer_norm.bias": clip.ln_final.bias,
    }
    for i, blk in enumerate(clip.transformer.resblocks):
        p = f"text_model.encoder.layers.{i}."
        q, k, v = blk.attn.in_proj_weight.chunk(3)
        qb, kb, vb = blk.attn.in_proj_bias.chunk(3)
        sd.update({
            p + "self_attn.q_proj.weight": q, p + "self_attn.q_proj.bias": qb,
            p + "self_attn.k_proj.weight": k, p + "self_attn.k_proj.bias": kb,
            p + "self_attn.v_proj.weight": v, p + "self_attn.v_proj.bias": vb,
            p + "self_attn.out_proj.weight": blk.attn.out_proj.weight, p + "self_attn.out_proj.bias": blk.attn.out_proj.bias,
            p + "layer_norm1.weight": blk.ln_1.weight, p + "layer_norm1.bias": blk.ln_1.bias,
            p + "layer_norm2.weight": blk.ln_2.weight, p + "layer_norm2.bias": blk.ln_2.bias,
            p + "mlp.fc1.weight": blk.mlp.c_fc.weight, p + "mlp.fc1.bias": blk.mlp.c_fc.bias,
            p + "mlp.fc2.weight": blk.mlp.c_proj.weight, p + "mlp.fc2.bias": blk.mlp.c_proj.bias,
        })
    return {k: v.detach().clone().float() for k, v in sd.items()}


def _load(model, sd: dict[str, torch.Tensor]):
    # transformers 4.x nests the tower under `text_model.`; 5.x may not: follow the model's own key names.
    own = model.state_dict()
    if "text_model.embeddings.token_embedding.weight" not in own:
        sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"text tower conversion mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


def text_model_from_open_clip(clip):
    """A `CLIPTextModel` whose last hidden states and pooled output equal the open_clip text tower's."""
    from transformers import CLIPTextModel

    return _load(CLIPTextModel(text_config_from_open_clip(clip)), _text_state_dict(clip))


def text_with_projection_from_open_clip(clip):
    """A `CLIPTextModelWithProjection`: its `text_embeds` equal open_clip's `encode_text` features."""
    from transformers import CLIPTextModelWithProjection

    model = CLIPTextModelWithProjection(text_config_from_open_clip(clip))
    sd = _text_state_dict(clip)
    proj = clip.text_projection
    sd["text_projection.weight"] = (proj.T if isinstance(proj, torch.Tensor) else proj.weight).detach().clone().float()
    return _load(model, sd)
