"""`snakepit test`'s side in the test process that needs no supervisor: the plugin's
exception rebuilt from its type name, log records replayed, the fixtures' error outside
`snakepit test`."""

import logging

import pytest

from snakepit_shim import testing
from snakepit_shim.testing import PluginError, plugin_exception


class Layout(OSError):
    """An exception class with a C layout of its own."""


def test_a_builtin_exception_is_both_plugin_error_and_its_class():
    exc = plugin_exception("ValueError", "bad period", "Traceback ...\nValueError: bad period\n")
    assert isinstance(exc, ValueError) and isinstance(exc, PluginError)
    assert str(exc) == "bad period"
    assert exc.type_name == "ValueError"
    assert "Traceback" in str(exc.__cause__)
    with pytest.raises(ValueError, match="bad period"):
        raise exc


def test_a_class_of_a_module_is_found_and_one_that_is_not_gives_plugin_error():
    exc = plugin_exception(f"{__name__}.Layout", "disk full", "tb")
    assert isinstance(exc, Layout) and isinstance(exc, PluginError)
    unknown = plugin_exception("nowhere.Missing", "gone", "tb")
    assert type(unknown) is PluginError
    assert unknown.type_name == "nowhere.Missing" and unknown.traceback == "tb"
    # Not an exception class: PluginError alone.
    assert type(plugin_exception("logging.Logger", "x", "tb")) is PluginError


def test_log_records_are_replayed_into_logging(caplog):
    with caplog.at_level(logging.INFO):
        testing._replay(
            [{"level": 30, "logger": "billing.invoicing", "message": "3 drafts", "exc_text": None, "time": 1.5}]
        )
    (record,) = caplog.records
    assert (record.name, record.levelno, record.getMessage(), record.created) == (
        "billing.invoicing",
        30,
        "3 drafts",
        1.5,
    )


def test_the_fixtures_outside_snakepit_test_say_how_to_run_them(monkeypatch):
    monkeypatch.delenv(testing.SOCKET_ENV, raising=False)
    monkeypatch.setattr(testing, "_SUPERVISOR", None)
    with pytest.raises(RuntimeError, match="snakepit --apps DIR test"):
        testing.supervisor()
