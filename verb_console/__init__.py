"""verb-console: an asyncio TCP message server and the Textual console that runs it."""

__version__ = "0.1.0"
