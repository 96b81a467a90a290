"""Data files users can edit (prices, routing policy): the packaged copy or their own."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any


def read_toml(package: str, name: str, path: Path | None = None) -> tuple[dict[str, Any], str]:
    """(parsed TOML, where it came from): `path` if given, else `name` packaged in `package`.

    ValueError names the file when it is not valid TOML.
    """
    if path is None:
        origin = f"{package.replace('.', '/')}/{name}"
        data = resources.files(package).joinpath(name).read_bytes()
    else:
        origin = str(path)
        data = path.read_bytes()
    try:
        return tomllib.loads(data.decode("utf-8")), origin
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{origin}: not valid TOML: {exc}") from exc
