"""Every command in the README's runnable (```sh) blocks runs as written and succeeds."""

from __future__ import annotations

import re
import subprocess

from conftest import ROOT


def sh_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_has_runnable_commands():
    assert len(sh_commands()) >= 5


def test_readme_tour_runs_as_written(tmp_path):
    for cmd in sh_commands():
        cmd = cmd.replace("/tmp/palign-tour", str(tmp_path))
        result = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{cmd}\n{result.stderr[-3000:]}"
    graded = (tmp_path / "piped.jsonl").read_text().splitlines()
    assert len(graded) == 3 and all('"pass_at"' in line for line in graded)
    assert (tmp_path / "summary.json").exists()
