"""LLaMA-Factory from the outside: find its CLI, read its template names and checkpoints, run it.

palign never imports llamafactory. It lives in its own virtual environment (it pins
transformers <=5.6, vLLM needs newer), so everything here works on files and a child process.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from palign_cli.errors import UsageError

ENV_CLI = "PALIGN_LLAMAFACTORY_CLI"

# llamafactory-cli's own multi-GPU / multi-node switches: read from the environment by its
# launcher, which then starts torchrun. palign passes them through untouched.
DISTRIBUTED_ENV = ("FORCE_TORCHRUN", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE")

BUNDLED_TEMPLATES = Path(__file__).parent / "configs" / "llamafactory_templates.json"

INSTALL_HINT = (
    "install LLaMA-Factory in its own environment (scripts/install-llamafactory.sh .venv-lf), "
    f"then pass --llamafactory-cli .venv-lf/bin/llamafactory-cli or set {ENV_CLI}"
)


def find_cli(explicit: str | None = None) -> Path | None:
    """The llamafactory-cli to run: --llamafactory-cli, else $PALIGN_LLAMAFACTORY_CLI, else PATH.

    A path the user named that does not exist is an error (a typo must not fall back to some
    other install on PATH); nothing found at all returns None.
    """
    named, source = (explicit, "--llamafactory-cli") if explicit else (os.environ.get(ENV_CLI), ENV_CLI)
    if named:
        found = shutil.which(os.path.expanduser(named))
        if found is None:
            raise UsageError(f"{source}: '{named}' is not an executable file; {INSTALL_HINT}")
        return Path(found).absolute()
    found = shutil.which("llamafactory-cli")
    return Path(found).absolute() if found else None


def require_cli(explicit: str | None = None) -> Path:
    cli = find_cli(explicit)
    if cli is None:
        raise UsageError(f"llamafactory-cli not found on PATH; {INSTALL_HINT}")
    return cli


def installed_template_source(cli: Path) -> Path | None:
    """The installed `llamafactory/data/template.py` behind a console script, if it can be found.

    A pip console script starts with `#!/venv/bin/python`; the package sits in that venv.
    """
    try:
        with open(cli, "rb") as f:
            first = f.readline(4096).decode("utf-8", "replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    interpreter = Path(first[2:].strip().split(" ")[0])
    for site in sorted(interpreter.parent.parent.glob("lib/python3*/site-packages")):
        candidate = site / "llamafactory" / "data" / "template.py"
        if candidate.is_file():
            return candidate
    return None


def parse_template_names(source: str) -> set[str]:
    """Names given to `register_template(name=...)` calls at module level (not in docstrings)."""
    return set(re.findall(r'^register_template\(\s*name="([^"]+)"', source, flags=re.MULTILINE))


def bundled_template_names() -> set[str]:
    import json

    return set(json.loads(BUNDLED_TEMPLATES.read_text(encoding="utf-8"))["templates"])


def template_names(cli: Path | None) -> tuple[set[str], str]:
    """LLaMA-Factory's chat template names and where they were read from.

    The installed package's own list when its source can be found (exact for any version),
    else the list captured from llamafactory 0.9.5.
    """
    source = installed_template_source(cli) if cli else None
    if source is not None:
        names = parse_template_names(source.read_text(encoding="utf-8"))
        if names:
            return names, str(source)
    return bundled_template_names(), f"{BUNDLED_TEMPLATES.name} (llamafactory 0.9.5)"


def check_template(name: str, cli: Path | None) -> None:
    import difflib

    names, source = template_names(cli)
    if name in names:
        return
    close = difflib.get_close_matches(name, sorted(names), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UsageError(f"--template '{name}' is not a LLaMA-Factory template (per {source}){hint}")


def checkpoints(output_dir: Path) -> list[Path]:
    """Saved `checkpoint-N` directories, oldest first, that a Trainer can resume from.

    A directory without trainer_state.json (written at the end of a save) is a save that was
    interrupted, and is passed over.
    """
    found = []
    for path in output_dir.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / "trainer_state.json").is_file():
            found.append((int(step), path))
    return [path for _, path in sorted(found)]


def training_finished(output_dir: Path) -> bool:
    """LLaMA-Factory writes train_results.json only after the last step's model is saved."""
    return (output_dir / "train_results.json").is_file()


def run(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    echo: Callable[[bytes], None],
    log_path: Path | None = None,
) -> int:
    """Run a child from an argument list (never a shell), streaming its output as it comes.

    stdout and stderr are merged and passed to `echo` in raw chunks, so progress bars that
    redraw with carriage returns still move; a copy goes to `log_path`. Returns the exit
    status, 128+N when the child died from signal N (as a shell reports it).
    """
    log = open(log_path, "ab") if log_path else None
    try:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except OSError as exc:
        if log:
            log.close()
        raise UsageError(f"cannot start {argv[0]}: {exc.strerror}") from None
    assert proc.stdout is not None
    try:
        while chunk := os.read(proc.stdout.fileno(), 65536):
            echo(chunk)
            if log:
                log.write(chunk)
        rc = proc.wait()
    except KeyboardInterrupt:
        _stop(proc)
        raise
    finally:
        proc.stdout.close()
        if log:
            log.close()
    return 128 - rc if rc < 0 else rc


def _stop(proc: subprocess.Popen) -> None:
    """On Ctrl-C let the trainer stop on its own first (it got the SIGINT too), then insist."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, None)):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def stderr_echo(chunk: bytes) -> None:
    """Write a child's raw output to our stderr (people read it; stdout stays for data)."""
    stream = getattr(sys.stderr, "buffer", None)
    if stream is not None:
        stream.write(chunk)
    else:
        sys.stderr.write(chunk.decode("utf-8", "replace"))
    sys.stderr.flush()
