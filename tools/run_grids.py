"""Put a run's sample grids (the same prompts and seeds every epoch) side by side in one labelled PNG.

    .venv/bin/python tools/run_grids.py RUN_DIR OUT.png 0,20,60

Made docs/train-grids.png from the README walk's run (`rlft simulate --oracle big`, then `rlft train` at the toy
defaults).
"""
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

run, out, epochs = Path(sys.argv[1]), Path(sys.argv[2]), [int(e) for e in sys.argv[3].split(",")]
meta = json.loads((run / "samples" / "grid.json").read_text())
grids = [Image.open(run / "samples" / f"epoch_{e:04d}.png").convert("RGB") for e in epochs]
scale = 2
grids = [g.resize((g.width * scale, g.height * scale), Image.NEAREST) for g in grids]
font = ImageFont.load_default(size=18)
label_w, head_h, gap = 300, 34, 16
W = label_w + sum(g.width for g in grids) + gap * (len(grids) - 1)
H = head_h + grids[0].height
canvas = Image.new("RGB", (W, H), "white")
d = ImageDraw.Draw(canvas)
row_h = grids[0].height // len(meta["rows"])
for i, prompt in enumerate(meta["rows"]):
    d.text((8, head_h + i * row_h + row_h // 2 - 10), prompt, fill="black", font=font)
x = label_w
for e, g in zip(epochs, grids, strict=False):
    d.text((x + 6, 8), "base (epoch 0)" if e == 0 else f"tuned, epoch {e}", fill="black", font=font)
    canvas.paste(g, (x, head_h))
    x += g.width + gap
canvas.save(out, optimize=True)
print(out, canvas.size)
