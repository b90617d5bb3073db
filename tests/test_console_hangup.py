"""Noticing a vanished terminal without stealing keystrokes from it."""

from __future__ import annotations

import os
import sys

import pytest

from verb_console.console.hangup import stdin_at_eof

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals only")


def test_an_open_pipe_with_nothing_to_read_is_not_eof() -> None:
    read, write = os.pipe()
    try:
        assert not stdin_at_eof(read)
    finally:
        os.close(read)
        os.close(write)


def test_a_pipe_with_pending_input_is_not_eof_and_the_input_is_left_unread() -> None:
    read, write = os.pipe()
    try:
        os.write(write, b"q")
        assert not stdin_at_eof(read)
        assert os.read(read, 10) == b"q"
    finally:
        os.close(read)
        os.close(write)


def test_a_pipe_whose_writer_has_gone_is_eof() -> None:
    read, write = os.pipe()
    os.close(write)
    try:
        assert stdin_at_eof(read)
    finally:
        os.close(read)
