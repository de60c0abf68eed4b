"""What a new user reads speaks the user's language: no project-internal words."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
# Words that mean something only inside the project's own process.
INTERNAL = re.compile(r"\bissue [0-9]|\.ci/run|\bshared/|DESIGN\.md|\bseed(?!\s*[=:)])(?!_)", re.IGNORECASE)
# "seed" is fine where it is a random seed.
RANDOM_SEED = re.compile(r"random seed|seed: int|default_rng\(seed\)|\(seed\)|seed=", re.IGNORECASE)


def _texts() -> list[Path]:
    paths = [CHECKOUT / "README.md"]
    for folder, patterns in (("src/fastbatch", ("*.py", "*.pyx", "*.pxd", "*.pyi", "*.hpp")),
                             ("docs", ("*.rst", "*.py", "*.md")), ("examples", ("*",))):
        for pattern in patterns:
            paths += sorted((CHECKOUT / folder).rglob(pattern))
    return [p for p in paths if p.is_file()]


def test_no_internal_vocabulary_in_the_package_docs_or_examples():
    if not (CHECKOUT / "src" / "fastbatch").is_dir():
        pytest.skip("needs the source checkout")
    found = []
    for path in _texts():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if INTERNAL.search(line) and not RANDOM_SEED.search(line):
                found.append(f"{path.relative_to(CHECKOUT)}:{number}: {line.strip()}")
    assert not found, "internal vocabulary:\n" + "\n".join(found)


def test_the_readme_opens_with_the_two_commands():
    text = (CHECKOUT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert block == ["pip install . && python -m fastbatch demo",
                     "pip install '.[test]' && python -m pytest"]
