"""What the console remembers between runs (the theme), in ``$XDG_CONFIG_HOME/verb-console``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def prefs_path() -> Path:
    """``$XDG_CONFIG_HOME/verb-console/console.json`` (``~/.config`` when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "verb-console" / "console.json"


def load() -> dict[str, Any]:
    """The saved preferences; empty when there are none or they cannot be read."""
    try:
        data = json.loads(prefs_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(**changes: Any) -> None:
    """Merge ``changes`` into the saved preferences; a failure is logged, never raised."""
    path = prefs_path()
    data = load()
    data.update(changes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as error:
        log.warning("could not save console preferences to %s: %s", path, error)
