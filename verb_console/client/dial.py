"""Opening a client's TCP connection, with errors that say why it failed."""

from __future__ import annotations

import os
import ssl

import anyio
import anyio.abc

__all__ = ["dial"]


async def dial(
    host: str,
    port: int,
    timeout: float | None,
    local_host: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    tls_hostname: str | None = None,
) -> anyio.abc.SocketStream:
    """Open a TCP connection (TLS with ``ssl_context``); every failure says why
    (refused, unreachable, timed out)."""
    try:
        with anyio.fail_after(timeout):
            if ssl_context is not None:
                # A TLS stream: what the clients use of a socket stream (send,
                # receive, aclose, the socket's addresses) it has as well.
                return await anyio.connect_tcp(  # type: ignore[return-value]
                    host,
                    port,
                    local_host=local_host,
                    ssl_context=ssl_context,
                    tls_hostname=tls_hostname or host,
                    tls_standard_compatible=False,
                )
            return await anyio.connect_tcp(host, port, local_host=local_host)
    except TimeoutError:
        raise TimeoutError(f"no TCP connection within {timeout:g}s") from None
    except OSError as exc:
        # anyio wraps the per-address failures; the first one says why (refused, unreachable).
        cause = exc.__cause__
        if isinstance(cause, ExceptionGroup):
            cause = next((e for e in cause.exceptions if isinstance(e, OSError)), None)
        if isinstance(cause, OSError):
            exc = cause
        if exc.errno is not None:  # "Connection refused", not "Connect call failed"
            raise type(exc)(exc.errno, os.strerror(exc.errno)) from None
        raise exc from None
