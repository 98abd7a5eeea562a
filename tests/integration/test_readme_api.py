"""The README's "Python API" example runs as written (against the sandbox, into a temporary
folder and cache) and makes the verified card image it says it makes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python_api_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the Python API section has one complete example"
    return str(blocks[0])


def test_readme_python_example_makes_a_verified_card_image(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_python_api_example(), encoding="utf-8")
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "FLASHER_CACHE_DIR": str(tmp_path / "cache"),
        "HOME": str(tmp_path),
    }
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    card = tmp_path / "kiosk-01.img"
    assert card.stat().st_size > 0
    assert "verified" in run.stdout and str(card) in run.stdout
    inspected = subprocess.run(
        [sys.executable, "-m", "flasher", "--json", "image", "inspect", str(card)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '"raspberrypi4-64"' in inspected
    assert "kiosk-01" in inspected
