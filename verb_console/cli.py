"""The command line: ``verb-console [--headless] [options]`` (fixed: scripts depend on it)."""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .settings import PROTOCOLS, Settings, StartupRefused

PROG = "verb-console"


class UsageError(Exception):
    """A bad flag or config value; reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _is_address(text: str) -> bool:
    from .admin.metrics import parse_address

    try:
        parse_address(text)
    except ValueError:
        return False
    return True


def _checked(kind: str, parse: Any, ok: Any) -> Any:
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}")
        return value

    convert.kind = kind  # type: ignore[attr-defined]
    return convert


_finite = float("inf")
_positive_int = _checked("a positive integer", int, lambda v: v >= 1)
_nonneg_int = _checked("an integer >= 0", int, lambda v: v >= 0)
_nonneg_float = _checked("a number >= 0", float, lambda v: 0 <= v < _finite)
_positive_float = _checked("a number > 0", float, lambda v: 0 < v < _finite)
_port = _checked("a port from 0 to 65535", int, lambda v: 0 <= v <= 65535)
_NODE = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
_on_hangup = _checked("keep or drain", str, lambda v: v in ("keep", "drain"))
_address = _checked("HOST:PORT", lambda t: t if _is_address(t) else None, bool)
_LEVELS = ("debug", "info", "warning", "error")
_log_level = _checked("one of " + ", ".join(_LEVELS), str.lower, lambda v: v in _LEVELS)
_log_format = _checked("text or json", str, lambda v: v in ("text", "json"))
_protocol = _checked("one of " + ", ".join(PROTOCOLS), str, lambda v: v in PROTOCOLS)


# setting -> (flag, converter, help); the flags are fixed by the architecture.
FLAGS: dict[str, tuple[str, Any, str]] = {
    "host": ("--host", str, "address to listen on (default 127.0.0.1)"),
    "port": ("--port", _port, "port to listen on; 0 picks a free one (default 8080)"),
    "protocol": ("--protocol", _protocol, "auto (default), json, binary, mux or echo"),
    "upload_dir": ("--upload-dir", str, "where uploads are stored (default ./uploads)"),
    "max_connections": ("--max-connections", _nonneg_int, "connections at once (default 10000)"),
    "max_per_ip": (
        "--max-per-ip",
        _nonneg_int,
        "connections per IP in the window; 0 turns it off (default 10)",
    ),
    "throttle_window": (
        "--throttle-window",
        _positive_float,
        "per-IP window in seconds (default 60)",
    ),
    "idle_timeout": (
        "--idle-timeout",
        _nonneg_float,
        "seconds with no bytes received; 0: none (default 300)",
    ),
    "handshake_timeout": (
        "--handshake-timeout",
        _positive_float,
        "seconds to detect an auto connection's protocol (default 10)",
    ),
    "max_frame": ("--max-frame", _positive_int, "largest frame in bytes (default 1048576)"),
    "max_pending": (
        "--max-pending",
        _positive_int,
        "unsent output per session in bytes (default 4 MiB)",
    ),
    "max_file_size": ("--max-file-size", _nonneg_int, "largest upload in bytes (default 1 GiB)"),
    "upload_quota": (
        "--upload-quota",
        _nonneg_int,
        "upload directory quota in bytes (default 10 GiB)",
    ),
    "grace_period": (
        "--grace-period",
        _nonneg_float,
        "graceful shutdown grace period in seconds (default 30)",
    ),
    "admin_socket": (
        "--admin-socket",
        str,
        "the server's admin socket (default $XDG_RUNTIME_DIR/verb-console/PORT.sock)",
    ),
    "on_hangup": (
        "--on-hangup",
        _on_hangup,
        "keep (default) or drain: what a hosted server does when its terminal goes away",
    ),
    "log_file": ("--log-file", str, "where the server logs once no terminal shows it"),
    "log_level": (
        "--log-level",
        _log_level,
        "debug, info (default), warning or error; debug adds a line per connect and close",
    ),
    "log_format": (
        "--log-format",
        _log_format,
        "text (default) or json: one object a line, with the event's fields",
    ),
    "refresh": ("--refresh", _positive_float, "console refreshes per second (default 4)"),
    "cluster": ("--cluster", str, "join a cluster through Redis at URL (redis://HOST:PORT/DB)"),
    "node_name": (
        "--node-name",
        _checked("1 to 32 characters of A-Za-z0-9_.-", str, lambda v: _NODE.match(v)),
        "this node's name in the cluster (default <hostname>-<port>)",
    ),
    "auth_file": ("--auth-file", str, "tokens, one NAME:SHA256HEX a line (docs/security.md)"),
    "tls_cert": ("--tls-cert", str, "serve TLS with this certificate (PEM; with --tls-key)"),
    "tls_key": ("--tls-key", str, "the certificate's private key (PEM)"),
    "tls_client_ca": (
        "--tls-client-ca",
        str,
        "require client certificates signed by this CA; the common name is the user",
    ),
    "resume_window": (
        "--resume-window",
        _nonneg_float,
        "seconds a dropped json session can be resumed; 0: off (default 0)",
    ),
    "history_size": (
        "--history-size",
        _nonneg_int,
        "room messages kept per room for recovery; 0: off (default 100)",
    ),
    "history_ttl": (
        "--history-ttl",
        _positive_float,
        "seconds a room message is kept for recovery (default 300)",
    ),
    "policy": ("--policy", str, "who may do what: a TOML policy file (docs/security.md)"),
    "state_dir": (
        "--state-dir",
        str,
        "where the server keeps its bans (default ./.verb-console)",
    ),
    "proxy_protocol": (
        "--proxy-protocol",
        str,
        "trust PROXY protocol headers from these networks: CIDR[,CIDR...] (s12.4)",
    ),
    "metrics": (
        "--metrics",
        _address,
        "serve Prometheus /metrics and /healthz on HOST:PORT (off by default; "
        "no authentication: 127.0.0.1:PORT keeps it local)",
    ),
}

# Settings only the config file sets (the command line is fixed).
CONFIG_ONLY: dict[str, Any] = {
    "max_rooms": _positive_int,
    "max_streams": _positive_int,
    "max_input_per_connection": _positive_int,
    "max_input_total": _positive_int,
    "max_transfers": _positive_int,
    "max_transfers_per_connection": _positive_int,
    "max_transfers_total": _positive_int,
    "max_upload_files": _positive_int,
    "max_reserved_per_client": _nonneg_int,
    "transfer_timeout": _nonneg_float,
    "max_line": _positive_int,
    "max_fanout_rate": _nonneg_int,
    "turn_budget": _positive_int,
    "turn_share": _positive_int,
    "writable_high_water_mark": _positive_int,
    "readable_high_water_mark": _positive_int,
    "read_only": bool,
    "demo": bool,
    "cluster_queue": _positive_int,
    "reuse_port": bool,
    "tls_required": bool,
    "history_total": _positive_int,
}


# What each flag's value is, as ARCHITECTURE.md's command line names it.
METAVARS = {"protocol": "P", "refresh": "HZ", "cluster": "URL", "metrics": "HOST:PORT"}
METAVARS |= dict.fromkeys(["admin_socket", "upload_dir"], "PATH")
METAVARS |= dict.fromkeys(["max_connections", "max_per_ip"], "N")
METAVARS |= dict.fromkeys(["throttle_window", "idle_timeout", "handshake_timeout"], "S")
METAVARS |= dict.fromkeys(["grace_period"], "S")
METAVARS |= dict.fromkeys(["max_frame", "max_pending", "max_file_size", "upload_quota"], "BYTES")
METAVARS |= dict.fromkeys(["on_hangup"], "keep|drain")
METAVARS |= dict.fromkeys(["log_file", "auth_file", "tls_cert", "tls_key", "tls_client_ca"], "FILE")
METAVARS |= {"policy": "FILE", "state_dir": "DIR", "proxy_protocol": "CIDR[,CIDR...]"}

EPILOG = """\
other commands:
  verb-console attach [--admin-socket PATH | --port PORT] [--read-only]
                        the console of a server that is already running
  verb-console ctl [--admin-socket PATH | --port PORT] COMMAND [--json]
                        operator commands from a shell (ctl --help lists them)
  verb-console token NAME
                        a new token and its auth-file line

Every setting, the ones only a --config file sets too, with its default:
docs/configuration.md"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="An asyncio TCP message server and the Textual operator console that runs it.",
        argument_default=argparse.SUPPRESS,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--headless", action="store_true", help="run the server with no UI, logging to stderr"
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML file with the same settings (command line wins)"
    )
    for name, (flag, conv, help_text) in FLAGS.items():
        parser.add_argument(
            flag,
            dest=name,
            type=conv,
            help=help_text,
            metavar=METAVARS.get(name, name.split("_")[-1].upper()),
        )
    parser.add_argument(
        "--read-only",
        dest="read_only",
        action="store_true",
        help="console: disable every action that changes the server",
    )
    parser.add_argument(
        "--tls-required",
        dest="tls_required",
        action="store_true",
        help="on an auto listener, close connections that do not start TLS",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="console: start simulated clients so every pane is alive",
    )
    return parser


def _convert(name: str, value: Any) -> Any:
    """Check one config-file value against the setting's type."""
    if name in FLAGS:
        conv = FLAGS[name][1]
    elif name in CONFIG_ONLY:
        conv = CONFIG_ONLY[name]
    else:
        raise UsageError(f"config: unknown setting {name!r}")
    if conv is bool:
        if not isinstance(value, bool):
            raise UsageError(f"config: {name} must be true or false, got {value!r}")
        return value
    if conv is str:
        if not isinstance(value, str):
            raise UsageError(f"config: {name} must be a string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"config: {name} must be {conv.kind}, got {value!r}")
    try:
        return conv(str(value))
    except argparse.ArgumentTypeError:
        raise UsageError(f"config: {name} must be {conv.kind}, got {value!r}") from None


def load_config(path: str) -> dict[str, Any]:
    """Settings from a TOML file (keys as in the flags, with - or _)."""
    try:
        with Path(path).open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"--config: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config: {path} is not valid TOML: {exc}") from None
    if "verb-console" in data and isinstance(data["verb-console"], dict):
        data = data["verb-console"]
    return {
        key.replace("-", "_"): _convert(key.replace("-", "_"), value) for key, value in data.items()
    }


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Defaults, then the config file, then the command line."""
    args = vars(build_parser().parse_args(argv))
    settings = Settings()
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    if "config" in args:
        values.update(load_config(args.pop("config")))
    values.update(args)
    for key, value in values.items():
        if key in known:
            setattr(settings, key, value)
    return settings


def check_security(settings: Settings) -> None:
    """Load the auth file and the certificate once before starting, so a bad one is
    reported in one line (exit status 2) instead of a traceback."""
    from .security import SecurityError, load_auth, load_policy, load_proxy_trust, load_tls

    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not settings.tls_cert and (settings.tls_client_ca or settings.tls_required):
        raise UsageError("--tls-client-ca and --tls-required need --tls-cert and --tls-key")
    if settings.policy and not settings.auth_file:
        raise UsageError("--policy needs --auth-file (a policy names authenticated users)")
    try:
        load_auth(settings)
        load_tls(settings)
        load_policy(settings)
        load_proxy_trust(settings)
    except SecurityError as exc:
        raise UsageError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ctl"]:
        from .admin.ctl import main as ctl_main

        return ctl_main(args[1:])
    if args[:1] == ["attach"]:
        from .console.attach import main as attach_main

        return attach_main(args[1:])
    if args[:1] == ["token"]:
        from .security import token_command

        return token_command(args[1:])
    try:
        settings = parse_settings(args)
        check_security(settings)
        if settings.headless:
            if settings.demo:
                raise UsageError("--demo is for the console (drop --headless)")
            if settings.read_only:
                raise UsageError("--read-only is for the console (drop --headless)")
            from .runtime import run_headless

            return run_headless(settings)
        from .console.run import run_console

        return run_console(settings)
    except (UsageError, StartupRefused) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Address in use, permission denied...: one line, not a traceback.
        print(f"{PROG}: error: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
