"""Print the third-party requirements of one image: swarmbus's own dependencies plus those of
the chosen extras (self-references such as `swarmbus[claude,gemini,openai]` expanded), one
per line, for `pip install -c requirements/constraints.txt -r -`.

The Dockerfile runs it with only pyproject.toml copied in, so the dependency layer is
cached until pyproject.toml or the constraints change, whatever happens to the code.

    python deploy/image_requirements.py pyproject.toml claude        # a Claude worker
    python deploy/image_requirements.py pyproject.toml "" httpx2     # no extra, one package
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_SELF = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*\[([^\]]*)\]\s*$")


def requirements(pyproject: Path, extras: list[str], extra_packages: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    name = project["name"].lower()
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = list(project.get("dependencies", []))
    seen: set[str] = set()
    todo = [e.strip() for e in extras if e.strip()]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"unknown extra {extra!r}; pyproject has: {', '.join(optional)}")
        seen.add(extra)
        for req in optional[extra]:
            own = _SELF.match(req)
            if own and own.group(1).lower() == name:
                todo.extend(own.group(2).split(","))
            else:
                out.append(req)
    out.extend(p.strip() for p in extra_packages if p.strip())
    return sorted(set(out), key=str.lower)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)  # noqa: T201
        return 2
    extras = argv[2].replace(" ", ",").split(",") if len(argv) > 2 else []
    packages = argv[3].replace(",", " ").split() if len(argv) > 3 else []
    for line in requirements(Path(argv[1]), extras, packages):
        print(line)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
