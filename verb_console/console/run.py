"""``verb-console`` with no ``--headless``: the console hosting the server in its own loop."""

from __future__ import annotations

import logging
import shutil
import tempfile

from ..demo import Demo
from ..hub.view import LiveHubView
from ..runtime import Runtime, choose_loop, log_file_handler, tune_gc
from ..settings import Settings
from .app import VerbConsoleApp


class _ToHubLog(logging.Handler):
    """Warnings and errors go to the console's Log pane; the terminal belongs to the UI."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(logging.WARNING)
        self.runtime = runtime

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "hub_event", False):
            return  # the hub's own log rows are in the Log pane already
        try:
            self.runtime.hub.event("error", record.getMessage())
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def build_app(
    settings: Settings, log_file: logging.Handler | None = None
) -> tuple[VerbConsoleApp, Runtime]:
    """The console app and the server runtime it starts on mount."""
    temp_dir = None
    if settings.demo and settings.upload_dir == Settings().upload_dir:
        # The demo's uploads go to a scratch directory, not the operator's.
        temp_dir = tempfile.mkdtemp(prefix="verb-console-demo-")
        settings.upload_dir = temp_dir
    runtime = Runtime(settings)
    demo: Demo | None = None

    async def startup() -> None:
        nonlocal demo
        # The terminal belongs to the UI: warnings go to the Log pane while it runs.
        root = logging.getLogger("verb_console")
        handler = _ToHubLog(runtime)
        root.addHandler(handler)
        propagate, root.propagate = root.propagate, False

        def restore_logging() -> None:
            root.removeHandler(handler)
            root.propagate = propagate

        runtime.hub.on_shutdown.append(restore_logging)
        runtime.install_signal_handlers()
        await runtime.start()
        if settings.demo:
            demo = Demo(settings.host, runtime.port)
            demo.start()
            # Simulated clients leave when the drain begins, as polite ones would.
            runtime.hub.on_drain.append(demo.stop)
        if temp_dir is not None:
            runtime.hub.on_shutdown.append(lambda: shutil.rmtree(temp_dir, ignore_errors=True))

    def after_hangup() -> None:
        # The server goes on with no terminal: later SIGHUPs reload, as headless.
        runtime.install_sighup_reload()
        if log_file is not None:
            root = logging.getLogger("verb_console")
            root.addHandler(log_file)
            root.setLevel(min(root.getEffectiveLevel(), log_file.level))
            runtime.hub.on_shutdown.append(lambda: root.removeHandler(log_file))
        where = f"; logging to {settings.log_file}" if settings.log_file else ""
        runtime.hub.event("server", f"terminal gone: serving on with no console{where}")

    tune_gc()
    view = LiveHubView(runtime.hub, read_only=settings.read_only)
    app = VerbConsoleApp(
        view,
        refresh_hz=settings.refresh,
        read_only=settings.read_only,
        startup=startup,
        on_hangup=settings.on_hangup,
        after_hangup=after_hangup,
        turns=runtime.hub.turns,
    )
    return app, runtime


def run_console(settings: Settings) -> int:
    """Run the console until the server has shut down; returns the exit status."""
    # Opened now, so a bad --log-file is an error at start, not after a hang-up.
    log_file = log_file_handler(settings) if settings.log_file else None
    app, _runtime = build_app(settings, log_file)
    choose_loop()
    rc = app.run()
    return 0 if rc is None else int(rc)
