"""Prompt sets: a plain text file, or a named set from the shared data folder (`parti`, `imagereward`, ...).

Named sets live in a registry (`PROMPT_SETS`) of name -> reader; other parts of rlft add theirs with
`register_prompt_set` (the toy world adds `toy`). The data folder is `$RLFT_DATA_DIR`, else
`<repo>/../shared/data/prompts`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefs.errors import NotFoundError, UserError

DATA_ENV = "RLFT_DATA_DIR"


@dataclass(frozen=True)
class PromptSet:
    """A named prompt set: `read()` returns its prompts in a stable order."""

    read: Callable[[], list[str]]
    description: str  # shown in error messages and help


PROMPT_SETS: dict[str, PromptSet] = {}


def register_prompt_set(name: str, read: Callable[[], list[str]], description: str) -> None:
    """Add (or replace) a named prompt set."""
    PROMPT_SETS[name] = PromptSet(read, description)


def data_dir() -> Path:
    """The folder holding the shared prompt files."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "prompts"


def _data_file(name: str) -> Path:
    path = data_dir() / name
    if not path.is_file():
        raise NotFoundError(f"prompt data file {path} is missing; point {DATA_ENV} at the folder that holds {name}")
    return path


def _lines(text: str) -> list[str]:
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


def read_text_file(path: str | os.PathLike) -> list[str]:
    """One prompt a line; blank lines and lines starting with `#` are skipped."""
    try:
        return _lines(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"prompt file {path} is not UTF-8 text: {e}") from e


def _parti() -> list[str]:
    with _data_file("PartiPrompts.tsv").open(encoding="utf-8", newline="") as f:
        return [p for row in csv.DictReader(f, delimiter="\t") if (p := (row.get("Prompt") or "").strip())]


def _json_field(name: str, field: str) -> Callable[[], list[str]]:
    def read() -> list[str]:
        items = json.loads(_data_file(name).read_text(encoding="utf-8"))
        return [p for item in items if (p := str(item.get(field, "")).strip())]

    return read


def _with_article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _ddpo_activities() -> list[str]:
    # DDPO's prompt-alignment task: "a <animal> <activity>" for every animal and activity.
    animals = _lines(_data_file("ddpo_simple_animals.txt").read_text(encoding="utf-8"))
    activities = _lines(_data_file("ddpo_activities.txt").read_text(encoding="utf-8"))
    return [f"{_with_article(a)} {act}" for a in animals for act in activities]


def _toy() -> list[str]:
    from rlft.toy.world import open_prompts

    return open_prompts()


register_prompt_set("parti", _parti, "PartiPrompts (1,632 prompts, PartiPrompts.tsv)")
register_prompt_set("imagereward", _json_field("imagereward_benchmark-prompts.json", "prompt"), "ImageReward benchmark (100 prompts)")
register_prompt_set("imagereward-refl", _json_field("imagereward_refl_data.json", "text"), "ImageReward ReFL training prompts (10,000)")
register_prompt_set("ddpo-animals", lambda: _lines(_data_file("ddpo_simple_animals.txt").read_text(encoding="utf-8")), "DDPO's 45 simple animals")
register_prompt_set("ddpo-activities", _ddpo_activities, "DDPO's animal x activity prompts")
register_prompt_set("toy", _toy, "the toy world: 40 prompts naming a shape and a background, leaving colour, size and position open")
register_prompt_set("ddpo-imagenet", lambda: _lines(_data_file("ddpo_imagenet_classes.txt").read_text(encoding="utf-8")), "DDPO's 1,000 ImageNet class names")


def load_prompts(source: str | os.PathLike) -> list[str]:
    """Prompts from a named set or a text file; raises NotFoundError / UserError on a bad source or no prompts."""
    text = os.fspath(source)
    if text in PROMPT_SETS and not Path(text).is_file():
        prompts = PROMPT_SETS[text].read()
    elif Path(text).is_file():
        prompts = read_text_file(text)
    else:
        raise NotFoundError(
            f"no prompt file or set named {text!r}; give a text file (one prompt a line) or a set: {', '.join(PROMPT_SETS)}"
        )
    if not prompts:
        raise UserError(f"no prompts in {text} (blank lines and # comments are skipped)")
    return prompts
