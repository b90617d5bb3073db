"""The Textual operator console that hosts and watches the hub."""

from .app import VerbConsoleApp

__all__ = ["VerbConsoleApp"]
