"""Built-in public rewards: each loads from a checkpoint in its published key layout (real architectures from
small configs, random weights) and scores as its formula computed by hand from the same model; JPEG sizes are
real encodings; bad specs are one-line UserErrors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from prefs.errors import UserError
from reward.builtins import BUILTINS, is_builtin, jpeg_kb, load_builtin, parse_spec
from reward.clip import OPENAI_MEAN, OPENAI_STD

PROMPTS = ["a red circle", "a blue square on a green background", "a star"]


def _images(n=3, h=40, w=56, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _hand_preprocess(x, size, mean=OPENAI_MEAN, std=OPENAI_STD):
    """HPSv2's / CLIP's val transform on tensors: resize the shorter side (bicubic, antialiased), centre crop,
    normalise; torchvision's own ops."""
    from torchvision.transforms import v2

    t = v2.Compose([v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(size),
                    v2.Normalize(mean, std)])
    return t(x)


# --- PickScore: a transformers CLIPModel folder -----------------------------------------------------------------
@pytest.fixture(scope="module")
def pickscore_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from rlft.models.tokenizer import plain_clip_tokenizer

    torch.manual_seed(0)
    text = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 77, "eos_token_id": 49407, "bos_token_id": 49406,
            "pad_token_id": 49407}
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
              "num_attention_heads": 2}
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16, logit_scale_init_value=2.0)).eval()
    folder = tmp_path_factory.mktemp("pickscore") / "PickScore_v1"
    model.save_pretrained(folder)
    processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                                 image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD)),
                              plain_clip_tokenizer())
    processor.save_pretrained(folder)
    return folder, model, processor


def test_pickscore_from_folder_equals_its_formula(pickscore_folder):
    folder, model, processor = pickscore_folder
    judge = load_builtin(f"pickscore={folder}", device="cpu")
    assert judge.differentiable and judge.kind == "pickscore"
    pil = [Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for x in _images()]
    # PickScore's README: processor -> get_*_features -> normalise -> logit_scale.exp() * image @ text.T (diagonal)
    with torch.no_grad():
        pix = processor(images=pil, return_tensors="pt")["pixel_values"]
        img = model.visual_projection(model.vision_model(pixel_values=pix).pooler_output)
        tok = processor(text=PROMPTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        txt = model.text_projection(model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).pooler_output)
        want = model.logit_scale.exp() * (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)
    got = judge.score(pil, PROMPTS)
    assert got.shape == (3,) and torch.allclose(got, want, atol=1e-5), (got, want)
    assert float(want.abs().max()) > 0.01  # a non-trivial value, not zeros on both sides
    # tensors take the differentiable preprocessing: the same resize-crop-normalise, close to PIL's
    x = torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1).float() / 255 for p in pil]).requires_grad_(True)
    s = judge.score(x, PROMPTS)
    assert torch.allclose(s, want, atol=0.05 * float(want.abs().max()))
    s.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    prov = judge.provenance()
    assert prov["weights"] == str(folder.resolve()) and prov["digest"].startswith("sha256:")
    assert prov["processor"] == str(folder.resolve())


def test_pickscore_wrong_layout_is_refused(tmp_path, pickscore_folder):
    folder, model, _ = pickscore_folder
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((folder / "config.json").read_text())
    sd = load_file(str(folder / "model.safetensors"))
    save_file({k.replace("vision_model.", "visual."): v for k, v in sd.items()}, str(bad / "model.safetensors"))
    with pytest.raises(UserError, match="does not fit transformers' CLIPModel"):
        load_builtin(f"pickscore={bad},processor={folder}", device="cpu")


# --- HPS v2.1: {"state_dict": open_clip CLIP} -----------------------------------------------------------------
TINY_H = "tiny-ViT-H-14-rlft-test"


@pytest.fixture(scope="module")
def hps_checkpoint(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("hps")
    cfg = json.loads((open_clip.factory._MODEL_CONFIG_PATHS[0] / "ViT-H-14.json").read_text())
    cfg["embed_dim"] = 16
    cfg["vision_cfg"].update(image_size=28, layers=2, width=32, head_width=16, patch_size=14)
    cfg["text_cfg"].update(width=32, heads=2, layers=2)
    (root / f"{TINY_H}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / f"{TINY_H}.json")
    torch.manual_seed(1)
    model = open_clip.create_model(TINY_H, pretrained=None).eval()
    path = root / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path, model


def test_hpsv2_checkpoint_equals_its_formula(hps_checkpoint):
    import open_clip

    path, model = hps_checkpoint
    judge = load_builtin(f"hpsv2={path},arch={TINY_H}", device="cpu")
    x = _images()
    # HPSv2's score: normalised image and text features of the open_clip model, diagonal of image @ text.T
    with torch.no_grad():
        img = F.normalize(model.encode_image(_hand_preprocess(x, 28)), dim=-1)
        txt = F.normalize(model.encode_text(open_clip.get_tokenizer(TINY_H)(PROMPTS)), dim=-1)
        want = torch.diagonal(img @ txt.T)
    got = judge.score(x, PROMPTS)
    assert torch.allclose(got, want, atol=1e-5), (got, want)
    assert judge.provenance()["arch"] == TINY_H and judge.provenance()["digest"].startswith("sha256:")


def test_hpsv2_checkpoint_not_in_the_published_layout(tmp_path, hps_checkpoint):
    path, model = hps_checkpoint
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)  # no {"state_dict": ...} wrapper
    with pytest.raises(UserError, match="not an HPS checkpoint"):
        load_builtin(f"hpsv2={bare},arch={TINY_H}", device="cpu")
    renamed = tmp_path / "renamed.pt"
    torch.save({"state_dict": {k.replace("visual.", "vision."): v for k, v in model.state_dict().items()}}, renamed)
    with pytest.raises(UserError, match="does not fit open_clip's"):
        load_builtin(f"hpsv2={renamed},arch={TINY_H}", device="cpu")


# --- LAION aesthetic on a CLIP, CLIPScore ------------------------------------------------------------------------
class OriginalMLP(nn.Module):
    """improved-aesthetic-predictor's MLP (simple_inference.py), its layer layout, on `input_size`-d embeddings."""

    def __init__(self, input_size):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


def test_laion_aesthetic_head_on_its_clip_equals_its_formula(tmp_path):
    from reward.clip import load_clip

    torch.manual_seed(2)
    mlp = OriginalMLP(64).eval()
    path = tmp_path / "head.pth"
    torch.save(mlp.state_dict(), path)
    judge = load_builtin(f"laion-aesthetic={path},clip=toy", device="cpu")
    clip = load_clip("toy", device="cpu")
    x = _images(h=64, w=64)
    with torch.no_grad():  # simple_inference.py: normalised CLIP image features through the MLP
        emb = F.normalize(clip.model.encode_image(_hand_preprocess(x, 64, (0.5,) * 3, (0.5,) * 3)), dim=-1)
        want = mlp(emb).squeeze(-1)
    assert torch.allclose(judge.score(x, None), want, atol=1e-5)
    assert judge.clip_spec == "toy"
    bigger = tmp_path / "l14.pth"
    torch.save(OriginalMLP(768).state_dict(), bigger)
    with pytest.raises(UserError, match="768-d embeddings but the CLIP toy makes 64-d"):
        load_builtin(f"laion-aesthetic={bigger},clip=toy", device="cpu")


def test_clipscore_is_clipped_scaled_cosine():
    from reward.clip import load_clip

    judge = load_builtin("clipscore=toy", device="cpu")
    clip = load_clip("toy", device="cpu")
    x = _images(h=64, w=64)
    with torch.no_grad():
        cos = (F.normalize(clip.model.encode_image(_hand_preprocess(x, 64, (0.5,) * 3, (0.5,) * 3)), dim=-1)
               * clip.encode_text(PROMPTS)).sum(-1)
    assert torch.allclose(judge.score(x, PROMPTS), 2.5 * cos.clamp(min=0), atol=1e-5)


# --- JPEG ---------------------------------------------------------------------------------------------------------
def test_jpeg_rewards_are_real_encodings():
    flat = torch.full((1, 3, 64, 64), 0.5)
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    x = torch.cat([flat, noise])
    comp, incomp = load_builtin("jpeg-compressibility"), load_builtin("jpeg-incompressibility")
    assert not comp.differentiable and comp.clip_spec is None
    sizes = []
    for img in x:
        buf = io.BytesIO()
        arr = (img * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(buf, format="JPEG", quality=95)
        sizes.append(len(buf.getvalue()) / 1000)
    assert torch.allclose(incomp.score(x, None), torch.tensor(sizes))
    assert torch.allclose(comp.score(x, None), -torch.tensor(sizes))
    assert comp.score(x, None)[0] > comp.score(x, None)[1]  # a flat image compresses better than noise
    pil = [Image.fromarray((i * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()) for i in x]
    assert torch.allclose(jpeg_kb(pil), torch.tensor(sizes))
    scores, info = comp(x, ["a", "b"], {})
    assert torch.equal(scores, comp.score(x, None)) and info["reward"] == "jpeg-compressibility"


# --- specs ----------------------------------------------------------------------------------------------------------
def test_registry_and_spec_parsing():
    assert {"laion-aesthetic", "pickscore", "hpsv2", "clipscore", "jpeg-compressibility",
            "jpeg-incompressibility"} <= set(BUILTINS)
    assert is_builtin("pickscore") and is_builtin("hpsv2=/x.pt,arch=ViT-H-14") and is_builtin("clipscore,x=1")
    assert not is_builtin("latest") and not is_builtin("r0003") and not is_builtin("/runs/pickscore")
    assert parse_spec("hpsv2=/a/b.pt,arch=ViT-H-14") == ("hpsv2", "/a/b.pt", {"arch": "ViT-H-14"})
    assert parse_spec("laion-aesthetic,clip=toy") == ("laion-aesthetic", None, {"clip": "toy"})


@pytest.mark.parametrize(("spec", "message"), [
    ("hpsv2=/nowhere/HPS_v2.1_compressed.pt", "no HPS v2 checkpoint file at /nowhere"),
    ("pickscore=/nowhere", "no PickScore model folder at /nowhere"),
    ("laion-aesthetic=/nowhere.pth", "no LAION aesthetic head file"),
    ("jpeg-compressibility=3", "takes no argument"),
    ("hpsv2,size=3", "hpsv2 takes no option 'size'; valid: arch=..."),
    ("clipscore=", "nothing after '='"),
    ("nope", "unknown built-in reward 'nope'"),
    ("hpsv2,arch", "bad option 'arch'"),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(UserError) as e:
        load_builtin(spec, device="cpu")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_offline_hub_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for spec, form in (("laion-aesthetic", "laion-aesthetic=/path/head.pth"), ("hpsv2", "hpsv2=/path/"),
                       ("pickscore", "pickscore=FOLDER")):
        with pytest.raises(UserError) as e:
            load_builtin(spec, device="cpu")
        assert form in str(e.value) and "\n" not in str(e.value), str(e.value)


# --- everywhere a reward is taken: rlft reward score, rlft simulate --scorer, the Gallery's ranking -------------------
def _pool(n=6):
    from prefs_util import add_toy_images

    import prefs

    store = prefs.open_store()
    add_toy_images(store, n)
    return store


def _pool_sizes(store):
    from prefs.pool import read_image

    out = {}
    for im in store.images():
        buf = io.BytesIO()
        read_image(store.image_path(im)).convert("RGB").save(buf, format="JPEG", quality=95)
        out[im.sha256] = len(buf.getvalue()) / 1000
    return out


def test_reward_score_simulate_and_gallery_take_a_builtin(tmp_path, rlft_home):
    from click.testing import CliRunner

    from rlft.cli import main
    from ui.scoring import Scores

    store = _pool()
    sizes = _pool_sizes(store)
    files = [str(store.image_path(im)) for im in store.images()][:2]
    out = CliRunner().invoke(main, ["reward", "score", "--reward", "jpeg-compressibility", "--json", *files])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.strip().splitlines()]
    by_path = {str(store.image_path(im)): im.sha256 for im in store.images()}
    assert [r["score"] for r in rows] == pytest.approx([-sizes[by_path[f]] for f in files])
    assert rows[0]["reward"] == "jpeg-compressibility"

    scores, label = Scores(store, reward="jpeg-incompressibility").rank(list(store.images()), wait=None)
    assert label == "reward jpeg-incompressibility"
    assert scores == pytest.approx(sizes)

    sim = CliRunner().invoke(main, ["simulate", "--oracle", "warm", "--n", "3", "--strategy", "uncertain",
                                    "--scorer", "jpeg-compressibility", "--json"])
    assert sim.exit_code == 0, sim.output
    assert json.loads(sim.output.strip().splitlines()[-1])["judged"] == 3
    store.close()


@pytest.mark.parametrize("args", [["reward", "score", "--reward", "hpsv2=/nowhere.pt", "x.png"],
                                  ["ui", "--reward", "nope", "--no-generate"],
                                  ["simulate", "--oracle", "warm", "--n", "2", "--strategy", "uncertain",
                                   "--scorer", "clipscore,a=b"]])
def test_a_bad_builtin_anywhere_is_exit_2_with_one_line(args, rlft_home):
    from click.testing import CliRunner

    from rlft.cli import main

    _pool(2).close()
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1, out.output


def test_gpu_rewards_bench_dry_run_scores_both_rewards(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_rewards.py"
    spec = importlib.util.spec_from_file_location("gpu_rewards", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu_rewards.json"
    assert bench.main([str(out), "--dry-run"]) == 0
    report = json.loads(out.read_text())
    assert set(report["rewards"]) == {"pickscore", "hpsv2"} and report["device"] == "cpu"
    for row in report["rewards"].values():
        assert row["finite"] and row["images_per_s"] > 0 and row["batch"] == 2 and row["size"] == 64
    assert bench.main([str(out), "--dry-run", "--rewards", "nope"]) == 2
    if not torch.cuda.is_available():
        assert bench.main([str(tmp_path / "x.json")]) == 2 and not (tmp_path / "x.json").exists()
