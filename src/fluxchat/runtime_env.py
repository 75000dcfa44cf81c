"""Entry points run under the project's virtualenv, whatever `python3` started them.

`./src/server_app.py` runs under the system `python3`, which on a clean Debian lacks our pinned
dependencies (or has older ones). Before importing anything that needs them, an entry point calls
`use_project_venv()`: when a runtime requirement of `requirements.txt` is missing or at another
version, it re-executes itself with `.venv/bin/python`, or says how to create that virtualenv.
Standard library only, so it works before the dependencies are there, and light: it reads the
installed versions from the `*.dist-info` directories itself, because `importlib.metadata` would
bring `email`, `zipfile` and `csv` into every node and CLI process (about 1.8 MiB and 45 ms).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
REEXEC_MARK = "FLUXCHAT_REEXECUTED"   # set for the child, so a broken venv cannot loop
EXIT_NO_DEPENDENCIES = 3


def runtime_requirements(path: Path) -> list[tuple[str, str]]:
    """(name, version) of the pinned runtime requirements: the pins before the `# Tests …` comment."""
    pins: list[tuple[str, str]] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.lstrip().lower().startswith("# test"):
            break
        name, sep, version = raw.split("#", 1)[0].partition("==")
        if sep:
            pins.append((name.strip(), version.strip()))
    return pins


def _normal(name: str) -> str:
    """A distribution name as PEP 503 compares them: case, '-', '_' and '.' do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(name: str) -> str | None:
    """The version of distribution `name` that this interpreter imports (the first one on sys.path,
    as importlib.metadata finds it), or None."""
    wanted = _normal(name)
    for entry in sys.path:
        try:
            listing = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for item in listing:
            stem, dot, kind = item.rpartition(".")
            if dot and kind in ("dist-info", "egg-info") and _normal(stem.split("-")[0]) == wanted:
                version = _metadata_version(Path(entry or ".") / item, kind)
                if version is not None:
                    return version
    return None


def _metadata_version(path: Path, kind: str) -> str | None:
    try:
        text = (path / ("METADATA" if kind == "dist-info" else "PKG-INFO")).read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^Version:[ \t]*(\S+)", text, re.MULTILINE)
    return match.group(1) if match else None


def unmet(pins: list[tuple[str, str]]) -> list[str]:
    """The pins this interpreter does not satisfy, described for a person."""
    problems = []
    for name, version in pins:
        installed = installed_version(name)
        if installed is None:
            problems.append(f"{name} is missing")
            continue
        if installed != version:
            problems.append(f"{name} is {installed}, not {version}")
    return problems


def use_project_venv(argv: list[str] | None = None) -> None:
    """Return if this Python has what requirements.txt pins; else re-execute `argv` (default:
    this process's) under .venv/bin/python, or exit with a message naming bin/setup.sh."""
    requirements = ROOT / "requirements.txt"
    if not requirements.exists():   # installed as a package: pip resolved the dependencies
        return
    problems = unmet(runtime_requirements(requirements))
    if not problems:
        return
    args = sys.argv if argv is None else argv
    if VENV_PYTHON.exists() and not os.environ.get(REEXEC_MARK):
        os.environ[REEXEC_MARK] = "1"
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), *args])
    where = "its virtualenv" if os.environ.get(REEXEC_MARK) else f"{VENV_PYTHON} (not found)"
    print(f"{Path(args[0]).name}: this Python ({sys.executable}) lacks FluxChat's dependencies "
          f"({'; '.join(problems)}), and so does {where}. Run bin/setup.sh to create the virtualenv, "
          "then start this program again.", file=sys.stderr)
    sys.exit(EXIT_NO_DEPENDENCIES)
