"""The console tests' fake hub is a whole :class:`HubView`.

A member the protocol gains and the fake lacks would only show when a test
happened to press the key that calls it (``Z`` calling ``bans``): here every
member is checked, with its parameters, so the fake type-checks as the
protocol it stands for.
"""

from __future__ import annotations

import inspect

from console_fake import FixedHubView, FrozenClock

from verb_console.hub.snapshot import HubView


def _members(cls: type) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(cls).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def test_the_fake_hub_has_every_member_of_the_hub_view_with_its_parameters() -> None:
    wanted = _members(HubView)
    assert {"operator_ban", "operator_unban", "bans", "overview"} <= set(wanted)
    for name, member in wanted.items():
        got = inspect.getattr_static(FixedHubView, name, None)
        assert got is not None, f"FixedHubView lacks {name}"
        if isinstance(member, property):
            assert isinstance(got, property), name
            continue
        assert callable(got), name
        want_params = list(inspect.signature(member).parameters)
        assert list(inspect.signature(got).parameters) == want_params, name


def test_the_fake_bans_as_the_hub_does() -> None:
    clock = FrozenClock()
    view = FixedHubView(clock)
    before = {b["target"] for b in view.bans()}
    ban = view.operator_ban("198.51.100.7", "10m")
    assert ban["expires"] - ban["created"] == 600 and ban["by"] == "console"
    assert {b["target"] for b in view.bans()} == before | {"198.51.100.7"}
    assert view.operator_unban("198.51.100.7") and not view.operator_unban("198.51.100.7")
    assert {b["target"] for b in view.bans()} == before
