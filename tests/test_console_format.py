"""The console's number, size, duration and rate formatting."""

from __future__ import annotations

import pytest

from verb_console.console.format import (
    fmt_byte_rate,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_eta,
    fmt_int,
    fmt_rate,
    progress_bar,
    sparkline,
)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (150 * 1024, "150 KiB"),
        (5 * 1024**3, "5.0 GiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_byte_counts_use_binary_units(n: int, text: str) -> None:
    assert fmt_bytes(n) == text


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0"), (9999, "9999"), (12_345, "12.3k"), (250_000, "250k"), (3e9, "3.0G")]
)
def test_counts_stay_short(n: float, text: str) -> None:
    assert fmt_count(n) == text


def test_exact_integers_get_thousands_separators() -> None:
    assert fmt_int(1234567) == "1,234,567"


@pytest.mark.parametrize(
    ("rate", "text"),
    [(0, "0/s"), (2.5, "2.5/s"), (999, "999/s"), (1234, "1.2k/s"), (2_500_000, "2.5M/s")],
)
def test_rates_have_three_significant_digits(rate: float, text: str) -> None:
    assert fmt_rate(rate) == text


def test_byte_rates_read_as_units_per_second() -> None:
    assert fmt_byte_rate(3 * 1024 * 1024) == "3.0 MiB/s"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (12345, "3h25m"),
        (90000, "1d01h"),
    ],
)
def test_durations_show_the_two_largest_units(seconds: float, text: str) -> None:
    assert fmt_duration(seconds) == text


def test_sparklines_are_right_aligned_and_scaled_to_the_window() -> None:
    assert sparkline([], 4) == "    "
    assert sparkline([1.0], 3) == "  █"
    line = sparkline([0, 5, 10], 5)
    assert len(line) == 5
    assert line.startswith("  ")
    assert line[-1] == "█"
    assert line[2] == "▁"
    assert sparkline([0, 0], 2) == "▁▁"
    assert sparkline(list(range(100)), 10) == sparkline(list(range(90, 100)), 10)


def test_progress_bars_are_exactly_as_wide_as_asked() -> None:
    for done in (0, 1, 50, 99, 100, 150):
        bar = progress_bar(done, 100, 16)
        assert len(bar) == 16
    assert progress_bar(50, 100, 16).endswith(" 50%")
    assert progress_bar(0, 0, 8) == "░░░   0%"
    assert progress_bar(100, 100, 14).startswith("█████████")


def test_eta_is_unknown_until_there_is_a_speed() -> None:
    assert fmt_eta(1000, 0) == "--"
    assert fmt_eta(1000, 10) == "1m40s"
