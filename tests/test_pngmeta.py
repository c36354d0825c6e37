"""A1111 `parameters` text: exact layout, parsing edge cases, PNG and EXIF round trips."""

from __future__ import annotations

from PIL import Image

from prefs.pngmeta import format_parameters, parse_parameters, pnginfo, read_parameters


def test_format_matches_a1111_layout_exactly():
    text = format_parameters(
        "a red circle", "blurry", steps=20, sampler="DDIM", cfg_scale=7.5, seed=1, width=512, height=768, model="sd15"
    )
    assert text == (
        "a red circle\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 1, Size: 512x768, Model: sd15"
    )


def test_format_without_negative_prompt_or_model_omits_those_parts():
    text = format_parameters("x", steps=2, sampler="Euler a", cfg_scale=7, seed=3, width=64, height=64)
    assert text == "x\nSteps: 2, Sampler: Euler a, CFG scale: 7, Seed: 3, Size: 64x64"


def test_extra_values_with_commas_are_quoted_and_round_trip():
    text = format_parameters(
        "p", steps=1, sampler="DDIM", cfg_scale=1.0, seed=0, width=8, height=8,
        extra={"Lora hashes": "a: 1, b: 2", "Run": "t0001", "Skipped": None, "Quote": 'say "hi"'},
    )
    assert 'Lora hashes: "a: 1, b: 2"' in text
    assert "Skipped" not in text
    parsed = parse_parameters(text)
    assert parsed["settings"] == {
        "Steps": "1", "Sampler": "DDIM", "CFG scale": "1.0", "Seed": "0", "Size": "8x8",
        "Lora hashes": "a: 1, b: 2", "Run": "t0001", "Quote": 'say "hi"',
    }


def test_parse_multiline_prompt_and_negative():
    text = "line one\nline two, with comma\nNegative prompt: bad\nworse\nSteps: 5, Sampler: DDIM, Seed: 9"
    parsed = parse_parameters(text)
    assert parsed["prompt"] == "line one\nline two, with comma"
    assert parsed["negative_prompt"] == "bad\nworse"
    assert parsed["settings"] == {"Steps": "5", "Sampler": "DDIM", "Seed": "9"}


def test_parse_missing_negative_prompt():
    parsed = parse_parameters("a cat\nSteps: 5, Sampler: DDIM, Seed: 9, Size: 64x32")
    assert parsed["prompt"] == "a cat"
    assert parsed["negative_prompt"] == ""
    assert parsed["settings"]["Size"] == "64x32"


def test_parse_text_without_settings_line_is_all_prompt():
    parsed = parse_parameters("just a prompt: with a colon")
    assert parsed == {"prompt": "just a prompt: with a colon", "negative_prompt": "", "settings": {}}


def test_round_trip_through_png_file(tmp_path):
    text = format_parameters(
        "ünïcode prompt\nsecond line", "neg", steps=20, sampler="DDIM", cfg_scale=7.5, seed=42,
        width=16, height=16, model="toy",
    )
    path = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(path, pnginfo=pnginfo(text))
    assert read_parameters(path) == text
    with Image.open(path) as img:
        assert read_parameters(img) == text
    parsed = parse_parameters(read_parameters(path))
    assert parsed["prompt"] == "ünïcode prompt\nsecond line"
    assert parsed["settings"]["Model"] == "toy"


def test_image_without_parameters_reads_none(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(path)
    assert read_parameters(path) is None


def test_jpeg_exif_user_comment(tmp_path):
    text = "a jpeg prompt\nSteps: 3, Sampler: DDIM, Seed: 7"
    img = Image.new("RGB", (8, 8))
    exif = img.getexif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + text.encode("utf-16-be")
    path = tmp_path / "a.jpg"
    img.save(path, exif=exif)
    assert read_parameters(path) == text
