"""`prefs` must never import torch: not on import, not through `rlft prefs stats`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, home) -> str:
    env = {**os.environ, "RLFT_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("RLFT_DB", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_importing_prefs_and_using_the_store_does_not_import_torch(rlft_home):
    code = (
        "import sys, prefs, prefs.store, prefs.samplers, prefs.stats, prefs.bt, prefs.export, prefs.imports, prefs.folder\n"
        "s = prefs.open_store(); s.stats(); print('torch' in sys.modules)"
    )
    assert run_python(code, rlft_home).strip() == "False"


def test_prefs_stats_cli_does_not_import_torch(rlft_home):
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom rlft.cli import main\n"
        "r = CliRunner().invoke(main, ['prefs', 'stats', '--json'])\nassert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(main, ['simulate', '--oracle', 'warm', '--n', '0'])\nassert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    assert run_python(code, rlft_home).strip() == "[]"
