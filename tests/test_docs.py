"""The documentation keeps its promises: the quickstart's commands run, the README's quickstart is the same,
every public name has its API entry, and the README is a front page whose links resolve.

``mkdocs build --strict`` (in ``.ci/run``) checks the site itself: every page in the nav, every link and
anchor between pages, every docstring of the API page.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "docs" / "quickstart.md"
README = ROOT / "README.md"
README_MAX_LINES = 250
DEMO_FRAMES = 12
# Pages other branches write, which the README links before they land (mkdocs does not check README.md).
PENDING_PAGES = {"docs/backends.md", "docs/models.md", "docs/review.md", "docs/serve.md"}

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block of a Markdown text."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def shell_commands(body: str) -> list[str]:
    """The commands of a shell block: one per line or per ``&&``, comments dropped."""
    commands: list[list[str]] = []
    for line in body.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append([])
        for word in words:
            if word == "&&":
                commands.append([])
            else:
                commands[-1].append(word)
    return [" ".join(c) for c in commands if c]


def section(text: str, heading: str) -> str:
    """The Markdown between ``heading`` and the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    end = re.search(rf"^#{{1,{len(level)}}} ", text[start:], re.M)
    return text[start: start + end.start()] if end else text[start:]


# Three commands cannot run inside a test as written; each stands in for them as closely as it can:
# - `pip install SPEC` would change the environment the tests run in: it checks instead that SPEC names this
#   clone and extras that exist, and that pip can build the project's metadata (`--dry-run`, offline);
# - `python -m pytest ...` would run the whole suite inside one test: it collects the suite instead;
# - `rtsal demo` plays 184 frames: it runs headless (no display: the recording path) for DEMO_FRAMES.
PRELUDE = r"""
set -euo pipefail
pip() {
  if [ "${1:-}" != install ]; then
    echo "quickstart test: only 'pip install' is expected, got: pip $*" >&2
    return 1
  fi
  shift
  "$RTSAL_TEST_PY" "$RTSAL_TEST_PIPCHECK" "$@"
}
python() {
  if [ "${1:-}" = -m ] && [ "${2:-}" = pytest ]; then
    shift 2
    "$RTSAL_TEST_PY" -m pytest "$@" --collect-only -p no:cacheprovider > collected.txt
  else
    "$RTSAL_TEST_PY" "$@"
  fi
}
rtsal() {
  if [ "${1:-}" = demo ]; then "$RTSAL_TEST_PY" -m rtsal "$@" --max-frames "$RTSAL_TEST_DEMO_FRAMES"
  else "$RTSAL_TEST_PY" -m rtsal "$@"; fi
}
"""

PIPCHECK = r"""
import re, subprocess, sys, tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
for spec in sys.argv[1:]:
    m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", spec)
    if not m:
        sys.exit(f"pip install {spec}: expected . or .[EXTRA,...] (this clone)")
    missing = [e for e in (m.group(1) or "").split(",") if e and e not in extras]
    if missing:
        sys.exit(f"pip install {spec}: pyproject.toml has no extra {missing}")
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", spec], check=True, timeout=120)
"""


def fresh_clone(path: Path) -> Path:
    """A directory laid out as a clone of this repository (its tracked top-level entries, linked)."""
    path.mkdir()
    for entry in sorted(ROOT.iterdir()):
        if entry.name in {".git", ".venv", "site", "out"} or entry.name.startswith((".pytest", ".ruff")):
            continue
        if entry.name.endswith(".egg-info") or entry.name in {"build", "dist", "__pycache__"}:
            continue
        if entry.is_file() and entry.suffix in {".mp4", ".png", ".jpg", ".npz", ".csv", ".json"}:
            continue  # what a run of the quickstart in the checkout left there
        (path / entry.name).symlink_to(entry)
    return path


def run_bash(script: str, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_quickstart_blocks_are_bash_python_or_output():
    """Every shell block of the quickstart is a ``bash`` block, so the test below runs all of them."""
    languages = {lang for lang, _ in code_blocks(QUICKSTART.read_text())}
    assert "bash" in languages
    assert not languages & (SHELL_LANGUAGES - {"bash"}), languages


@pytest.mark.slow
def test_every_quickstart_command_runs(tmp_path):
    """Every bash block of the quickstart, in order, then its Python blocks, in a fresh directory laid out
    as a clone, without a display; the stand-ins for pip, pytest and the demo's length are above."""
    blocks = [body for lang, body in code_blocks(QUICKSTART.read_text()) if lang == "bash"]
    commands = [c for body in blocks for c in shell_commands(body)]
    assert "rtsal demo" in commands
    clone = fresh_clone(tmp_path / "clone")
    (tmp_path / "pipcheck.py").write_text(PIPCHECK)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(RTSAL_TEST_PY=sys.executable, RTSAL_TEST_PIPCHECK=str(tmp_path / "pipcheck.py"),
               RTSAL_TEST_DEMO_FRAMES=str(DEMO_FRAMES), RTSAL_COMPILE="0",
               RTSAL_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    python_blocks = [body for lang, body in code_blocks(QUICKSTART.read_text()) if lang == "python"]
    script = PRELUDE + "\n".join(f"# block {i}\n{body}" for i, body in enumerate(blocks))
    script += "".join(f"python - <<'PYTHON_BLOCK'\n{body}PYTHON_BLOCK\n" for body in python_blocks)
    done = run_bash(script, clone, env, timeout=480)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "demo: no display, so recording to rtsal-demo.mp4" in done.stdout
    if python_blocks:
        assert "['espresso', 'cup', 'consomme']" in done.stdout  # what the page's Python example says

    import av

    with av.open(str(clone / "rtsal-demo.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == DEMO_FRAMES
    if any(c.startswith("python -m pytest") for c in commands):
        assert re.search(r"\b\d{2,} tests collected", (clone / "collected.txt").read_text())


def test_readme_quickstart_is_the_quickstart_page():
    """The README's two commands are among those the test above runs, word for word."""
    quickstart = section(README.read_text(), "## Quickstart")
    blocks = [body for lang, body in code_blocks(quickstart) if lang == "bash"]
    readme = [c for body in blocks for c in shell_commands(body)]
    page = {c for lang, body in code_blocks(QUICKSTART.read_text()) if lang == "bash"
            for c in shell_commands(body)}
    assert readme[:2] == ["pip install .", "rtsal demo"]
    assert set(readme) <= page, set(readme) - page


def test_every_public_name_is_in_the_api_reference():
    import rtsal

    api = (ROOT / "docs" / "api.md").read_text()
    entries = set(re.findall(r"^::: ([\w.]+)", api, re.M))
    missing = [name for name in rtsal.__all__ if f"rtsal.{name}" not in entries]
    assert not missing, f"add `::: rtsal.NAME` to docs/api.md for {missing}"


def test_readme_is_a_front_page_whose_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = {t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")}
    assert "docs/quickstart.md" in local
    broken = sorted(t for t in local - PENDING_PAGES if not (ROOT / t).exists())
    assert not broken, broken
