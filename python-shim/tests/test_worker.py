"""The real worker process driven by the fake supervisor of conftest.py."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from datetime import date

import pytest

from conftest import CODEC, DEADLINE, start_worker, spawn_on_fd3, worker_command
from snakepit_shim import protocol

RESULT, EXCEPTION, LOG = protocol.RESULT, protocol.EXCEPTION, protocol.LOG


def test_handshake(plugins):
    sup = start_worker(plugins)
    try:
        msg = sup.recv()
        assert msg[:3] == [protocol.HANDSHAKE, protocol.PROTOCOL_VERSION, sup.proc.pid]
        assert msg[3] == "%d.%d.%d" % sys.version_info[:3]
        assert msg[4] == CODEC.name  # SNAKEPIT_SHIM_CODEC=stdlib is inherited
        assert sup.shutdown() == 0
    finally:
        sup.close()


# ------------------------------------------------------------------------- calls


def test_dates_and_iso_texts_meet_str_and_date_annotations(shared_worker):
    day = date(2026, 5, 1)
    msg = shared_worker.call("dated:run", {"day": day, "text": day, "month": "2026-04",
                                           "plain": day, "maybe": "2026-05-31"})
    # A date for `str` arrives as its text, a month's text for `date` as its first day;
    # an unannotated parameter gets the value as sent.
    assert msg == [RESULT, shared_worker.next_call,
                   [day, "2026-05-01", date(2026, 4, 1), day, date(2026, 5, 31)]]
    ok = shared_worker.validate("dated:run", {"day": "2026-05-01", "text": day,
                                              "month": "2026-04"}, [])
    assert ok[0] == RESULT, ok
    for bad in ({"day": 5}, {"day": "yesterday"}):
        msg = shared_worker.validate("dated:run", {"text": "t", "month": "2026-04", **bad}, [])
        assert msg[0] == EXCEPTION and "kwarg 'day'" in msg[4], msg
    msg = shared_worker.validate("annotated:run", {"period": "p", "count": day}, [])
    assert msg[0] == EXCEPTION and "does not match the annotation 'int | None'" in msg[4], msg


def test_a_measured_call_has_its_usage_before_its_answer_and_an_unmeasured_one_none(worker):
    sup = worker  # a fresh one: its peak RSS is its start-up's
    msg = sup.call("costly:burn", {"ms": 60}, measure=True)
    assert msg == [RESULT, sup.next_call, 60]
    (usage,) = sup.usages
    assert usage[:2] == [protocol.USAGE, sup.next_call]
    cpu_user, cpu_sys, max_rss = usage[2:]
    assert cpu_user + cpu_sys >= 0.055, usage  # seconds: the 60 ms the plugin burnt
    sup.call("costly:burn", {"ms": 0}, measure=True)
    assert sum(sup.usages[-1][2:4]) < 0.055, sup.usages  # the next call starts afresh
    # An unmeasured call has no USAGE, and its CPU is not charged to the next measured one.
    sup.call("costly:burn", {"ms": 60})
    assert len(sup.usages) == 2, sup.usages
    sup.call("costly:burn", {"ms": 0}, measure=True)
    assert sup.usages[-1][1] == sup.next_call and sum(sup.usages[-1][2:4]) < 0.055, sup.usages
    # The peak is the worker's high-water mark (KiB), which an exec'd worker starts with
    # its forking parent's (here pytest's, ≈ 100 MiB): allocate well above that.
    msg = sup.call("costly:grow", {"mib": 200}, measure=True)
    assert msg[2] == 200 << 20
    assert sup.usages[-1][4] >= max(max_rss, 160 << 10), (max_rss, sup.usages)
    # A failing call has its usage too, and a VALIDATE answer none; an import's CPU is not
    # the next call's.
    assert sup.call("billing.invoicing:custom", {}, measure=True)[0] == EXCEPTION
    assert sup.usages[-1][1] == sup.next_call
    sup.validate("costly:burn", {"ms": 1}, [])
    assert sup.usages[-1][1] == sup.next_call - 1
    sup.call("costly:burn", {"ms": 0}, measure=True)
    assert sup.usages[-1][1] == sup.next_call and sum(sup.usages[-1][2:4]) < 0.055, sup.usages


def test_sync_call_with_context_and_kwargs(shared_worker):
    msg = shared_worker.call("billing.invoicing:run", {"period": "2026-05"},
                             {"job_id": "j1", "period": "context-loses"})
    assert msg == [RESULT, shared_worker.next_call,
                   {"period": "2026-05", "dry_run": False, "ctx": ["job_id"]}]


def test_function_without_var_kwargs_gets_only_declared_context(shared_worker):
    msg = shared_worker.call("billing.invoicing:strict", {"period": "p"},
                             {"job_id": "j", "run_id": "r", "connectors": None})
    assert msg[2] == ["p", "j"]


def test_async_call(shared_worker):
    assert shared_worker.call("billing.invoicing:arun", {"n": 21})[2] == {"n": 42}
    assert shared_worker.call("billing.invoicing:arun", {"n": 1})[2] == {"n": 2}  # loop reused


@pytest.mark.parametrize("reference,kwargs,context,type_name,fragment", [
    ("billing.invoicing:strict", {"period": "p", "extra": 1}, {}, "TypeError",
     "got an unexpected keyword argument 'extra' (it accepts: period, job_id)"),
    ("billing.invoicing:strict", {}, {"job_id": "j"}, "TypeError",
     "missing the required parameter 'period'"),
    ("billing.nothing:run", {}, {}, "ModuleNotFoundError", "no module named 'billing.nothing'"),
    ("nowhere.at.all:run", {}, {}, "ModuleNotFoundError", "no module named 'nowhere'"),
    ("billing.invoicing:absent", {}, {}, "AttributeError", "has no attribute 'absent'"),
    ("billing.invoicing:not_callable", {}, {}, "TypeError", "not callable"),
    ("billing.invoicing", {}, {}, "ValueError", "not of the form 'package.module:function'"),
    ("broken:f", {}, {}, "SyntaxError", "importing 'broken' failed: SyntaxError"),
    ("raises_on_import:f", {}, {}, "RuntimeError", "import-time failure"),
])
def test_reference_errors(shared_worker, reference, kwargs, context, type_name, fragment):
    msg = shared_worker.call(reference, kwargs, context)
    assert msg[0] == EXCEPTION and msg[2] == "reference", msg
    assert msg[3] == type_name
    assert fragment in msg[4]


def test_import_failure_carries_its_traceback(shared_worker):
    msg = shared_worker.call("raises_on_import:f")
    assert "RuntimeError: import-time failure" in msg[5]
    assert "raises_on_import.py" in msg[5]


def test_exception_with_chained_traceback(shared_worker):
    msg = shared_worker.call("billing.invoicing:chained")
    _, _, kind, type_name, message, tb = msg
    assert (kind, type_name, message) == ("raised", "ValueError", "bad period")
    assert "KeyError: 'missing'" in tb
    assert "The above exception was the direct cause of the following exception" in tb
    assert tb.rstrip().endswith("ValueError: bad period")
    assert "snakepit_shim" not in tb  # the shim's own frames are cut


def test_exception_type_is_qualified(shared_worker):
    msg = shared_worker.call("billing.invoicing:custom")
    assert msg[3] == "billing.invoicing.Oops" and msg[4] == "custom"


def test_system_exit_in_a_plugin_does_not_end_the_worker(shared_worker):
    msg = shared_worker.call("billing.invoicing:exits")
    assert msg[2:5] == ["raised", "SystemExit", "5"]
    assert shared_worker.call("billing.invoicing:identity", {"value": 1})[2] == 1


def test_encode_error_names_the_path(shared_worker):
    msg = shared_worker.call("billing.invoicing:bad_result")
    assert msg[2] == "encode"
    assert msg[4] == 'result["rows"][3]["when"]: set is not a wire type'


def test_text_with_lone_surrogates_still_crosses(shared_worker):
    shared_worker.logs.clear()
    msg = shared_worker.call("billing.invoicing:surrogate_error")
    assert msg[2:5] == ["raised", "ValueError", "bad ? name"]
    assert shared_worker.logs[0][4] == "bad ? name"


def test_value_that_fails_while_encoding(shared_worker):
    msg = shared_worker.call("billing.invoicing:broken_tz")
    assert msg[2] == "encode" and "no offset" in msg[4]
    assert shared_worker.call("billing.invoicing:identity", {"value": 1})[2] == 1


def test_every_value_type_round_trips_through_a_call(shared_worker):
    from golden_values import GOLDEN

    for name in ("result-scalars", "result-long"):
        value = dict(GOLDEN)[name][2]
        assert shared_worker.call("billing.invoicing:identity", {"value": value})[2] == value


def test_result_over_the_frame_limit(plugins):
    sup = start_worker(plugins, frame_limit=65536)
    try:
        assert sup.recv()[0] == protocol.HANDSHAKE
        msg = sup.call("billing.invoicing:big_result", {"size": 70000})
        assert msg[2] == "encode"
        assert "exceeds the frame limit of 65536 bytes" in msg[4] and "700" in msg[4]
        assert sup.call("billing.invoicing:big_result", {"size": 100})[2] == b"x" * 100
    finally:
        sup.close()


# ------------------------------------------------------------------------- logs


def test_log_records_are_tagged_with_the_call(shared_worker):
    shared_worker.logs.clear()
    msg = shared_worker.call("billing.invoicing:run", {"period": "p"})
    (log,) = [m for m in shared_worker.logs if m[3] == "billing.invoicing"]
    assert log[:6] == [LOG, msg[1], 20, "billing.invoicing", "drafts=3", None]
    assert abs(log[6] - time.time()) < 60


def test_logged_exception_text(shared_worker):
    shared_worker.logs.clear()
    shared_worker.call("billing.invoicing:logs_exception")
    (log,) = shared_worker.logs
    assert log[2] == 40 and log[4] == "it broke"
    assert "ZeroDivisionError" in log[5]


def test_prints_become_log_lines(shared_worker):
    shared_worker.logs.clear()
    msg = shared_worker.call("billing.invoicing:printer", {"n": 3})
    lines = [(m[1], m[2], m[3], m[4]) for m in shared_worker.logs]
    call_id = msg[1]
    assert lines == [
        (call_id, 20, "stdout", "line 0"),
        (call_id, 20, "stdout", "line 1"),
        (call_id, 20, "stdout", "line 2"),
        (call_id, 30, "stderr", "err line"),
        (call_id, 20, "stdout", "partial"),  # flushed at the end of the call
    ]


def test_a_hundred_thousand_lines(shared_worker):
    shared_worker.logs.clear()
    msg = shared_worker.call("billing.invoicing:printer", {"n": 100_000}, timeout=60)
    assert msg[2] == 100_000
    assert len(shared_worker.logs) == 100_002
    assert shared_worker.logs[99_999][4] == "line 99999"


# ------------------------------------------------------------------------- cancel


def _wait_started(sup, call_id):
    """No frame announces that a call has started: give it a moment, bounded."""
    time.sleep(0.2)
    assert sup.proc.poll() is None


def test_cancel_sync_call_in_sleep(shared_worker):
    call_id = shared_worker.start_call("billing.invoicing:sleeper", {"seconds": 60})
    _wait_started(shared_worker, call_id)
    started = time.monotonic()
    shared_worker.cancel(call_id)
    msg = shared_worker.recv_until((RESULT, EXCEPTION), timeout=5)
    assert msg[1] == call_id and msg[2] == "cancelled"
    assert time.monotonic() - started < 2
    assert shared_worker.call("billing.invoicing:identity", {"value": "still here"})[2] == "still here"


def test_cancel_async_call_in_sleep(shared_worker):
    call_id = shared_worker.start_call("billing.invoicing:asleeper", {"seconds": 60})
    _wait_started(shared_worker, call_id)
    shared_worker.cancel(call_id)
    msg = shared_worker.recv_until((RESULT, EXCEPTION), timeout=5)
    assert msg[1] == call_id and msg[2] == "cancelled"
    assert shared_worker.call("billing.invoicing:arun", {"n": 2})[2] == {"n": 4}


def test_cancel_async_call_blocked_in_sync_code(shared_worker):
    call_id = shared_worker.start_call("billing.invoicing:blocking_in_async")
    _wait_started(shared_worker, call_id)
    shared_worker.cancel(call_id)
    msg = shared_worker.recv_until((RESULT, EXCEPTION), timeout=5)
    assert msg[1] == call_id and msg[2] == "cancelled"
    assert shared_worker.call("billing.invoicing:arun", {"n": 3})[2] == {"n": 6}


def test_cancel_frame_alone_cancels_an_async_call(shared_worker):
    call_id = shared_worker.start_call("billing.invoicing:asleeper", {"seconds": 60})
    _wait_started(shared_worker, call_id)
    shared_worker.send(protocol.build_cancel(call_id))  # no signal
    msg = shared_worker.recv_until((RESULT, EXCEPTION), timeout=5)
    assert msg[2] == "cancelled"


def test_cancel_while_waiting_for_a_host_reply(shared_worker):
    call_id = shared_worker.start_call("hosty:sleep_in_host")
    shared_worker.auto_echo = False
    try:
        req = shared_worker.recv_until((protocol.HOST_REQUEST,))
        assert req[2:4] == [call_id, "hang"]
        shared_worker.cancel(call_id)
        msg = shared_worker.recv_until((RESULT, EXCEPTION), timeout=5)
        assert msg[1] == call_id and msg[2] == "cancelled"
    finally:
        shared_worker.auto_echo = True
    # the late reply to the abandoned request is ignored
    shared_worker.send(protocol.build_host_reply(req[1], True, None, CODEC))
    assert shared_worker.call("hosty:sync_echo", {"x": 5})[2] == {"x": 5}


def test_stale_cancel_and_stray_signal_are_ignored(shared_worker):
    shared_worker.send(protocol.build_cancel(999_999))
    os.kill(shared_worker.proc.pid, signal.SIGUSR1)
    call_id = shared_worker.start_call("billing.invoicing:sleeper", {"seconds": 0.5})
    _wait_started(shared_worker, call_id)
    shared_worker.send(protocol.build_cancel(call_id - 1))  # another call's id
    os.kill(shared_worker.proc.pid, signal.SIGUSR1)
    msg = shared_worker.recv_until((RESULT, EXCEPTION), timeout=5)
    assert msg == [RESULT, call_id, "woke"]


@pytest.mark.parametrize("reference", ["billing.invoicing:sleeper", "billing.invoicing:asleeper"])
def test_cancel_that_overtakes_its_call(shared_worker, reference):
    # CALL and CANCEL in one write: the CANCEL is read while the CALL waits in the inbox
    shared_worker.next_call += 1
    call_id = shared_worker.next_call
    shared_worker.sock.sendall(
        protocol.frame(protocol.build_call(call_id, reference, {}, {}, CODEC))
        + protocol.frame(protocol.build_cancel(call_id)))
    os.kill(shared_worker.proc.pid, signal.SIGUSR1)
    msg = shared_worker.recv_until((RESULT, EXCEPTION), timeout=5)
    assert msg[1] == call_id and msg[2] == "cancelled"


def test_cancel_during_a_slow_import(shared_worker):
    call_id = shared_worker.start_call("slow_import:f")
    _wait_started(shared_worker, call_id)
    shared_worker.cancel(call_id)
    msg = shared_worker.recv_until((RESULT, EXCEPTION), timeout=5)
    assert msg[1] == call_id and msg[2] == "cancelled"
    assert shared_worker.call("billing.invoicing:identity", {"value": 8})[2] == 8


@pytest.mark.parametrize("reference", ["billing.invoicing:busy", "billing.invoicing:print_forever"])
def test_cancel_running_python_code(shared_worker, reference):
    # a pure-Python loop, and one that is mostly inside frame writes (the signal then
    # waits for the frame to complete)
    call_id = shared_worker.start_call(reference)
    _wait_started(shared_worker, call_id)
    shared_worker.cancel(call_id)
    msg = shared_worker.recv_until((RESULT, EXCEPTION), timeout=5)
    assert msg[1] == call_id and msg[2] == "cancelled"
    shared_worker.logs.clear()
    assert shared_worker.call("billing.invoicing:identity", {"value": 7})[2] == 7


def test_log_between_calls_has_no_call_id(shared_worker):
    shared_worker.call("billing.invoicing:start_background_logger")
    shared_worker.logs.clear()
    shared_worker.call("billing.invoicing:release_background_logger")
    msg = shared_worker.recv_until((LOG,), timeout=5)
    assert msg[1:5] == [None, 30, "billing.invoicing", "from a thread between calls"]


# ------------------------------------------------------------------------- host requests


@pytest.mark.parametrize("reference,expected", [
    ("hosty:sync_echo", {"x": 1}),
    ("hosty:async_echo", {"x": 1}),
    ("hosty:sync_inside_async", {"x": 1}),
    ("hosty:gathered", [0, 1, 2, 3, 4]),
    ("hosty:from_threads", [0, 1, 2, 3]),
    ("hosty:threads_in_async", ["loop", 0, 1, 2, 3]),
    ("hosty:own_loop", "own"),
    ("hosty:unknown", ["UnknownMethod", "no handler for 'nope'"]),
])
def test_host_requests(shared_worker, reference, expected):
    shared_worker.host_requests.clear()
    msg = shared_worker.call(reference)
    assert msg == [RESULT, shared_worker.next_call, expected]
    ids = [r[1] for r in shared_worker.host_requests]
    assert len(ids) == len(set(ids)) >= 1
    assert all(r[2] == msg[1] for r in shared_worker.host_requests)


def test_a_sync_request_reads_past_other_frames_to_its_reply(shared_worker):
    # The main thread's fast path reads its own reply: frames that come first in the same
    # read (a stale CANCEL, a reply nobody waits for) are routed, and the reply found.
    shared_worker.auto_echo = False
    try:
        call_id = shared_worker.start_call("hosty:sync_echo", {"x": 7})
        req = shared_worker.recv_until((protocol.HOST_REQUEST,))
        frames = [
            protocol.build_cancel(call_id - 1),
            protocol.build_host_reply(req[1] + 1000, True, "nobody's", CODEC),
            protocol.build_host_reply(req[1], True, req[4], CODEC),
        ]
        shared_worker.sock.sendall(b"".join(protocol.frame(f) for f in frames))
        msg = shared_worker.recv_until((RESULT, EXCEPTION))
    finally:
        shared_worker.auto_echo = True
    assert msg == [RESULT, call_id, {"x": 7}]


def test_several_async_requests_are_in_flight_at_once(shared_worker):
    shared_worker.auto_echo = False
    try:
        call_id = shared_worker.start_call("hosty:gathered", {"n": 3})
        requests = [shared_worker.recv_until((protocol.HOST_REQUEST,)) for _ in range(3)]
        for req in reversed(requests):  # answered out of order
            shared_worker.answer(req)
        msg = shared_worker.recv_until((RESULT, EXCEPTION))
    finally:
        shared_worker.auto_echo = True
    assert msg == [RESULT, call_id, [0, 1, 2]]


# ------------------------------------------------------------------------- validate


@pytest.mark.parametrize("reference,kwargs,context_keys,fragment", [
    ("billing.invoicing:run", {"period": "2026-05"}, ["connectors", "run_id"], None),
    ("billing.invoicing:run", {}, ["period"], None),
    ("billing.invoicing:run", {}, ["run_id"], "missing the required parameter 'period'"),
    ("billing.invoicing:strict", {"period": "p", "run_id": "r"}, [],
     "unexpected keyword argument 'run_id'"),
    ("billing.invoicing:run", {"period": 2026}, [],
     "kwarg 'period' = 2026 (int) does not match the annotation 'str'"),
    ("billing.invoicing:run", {"period": "p", "dry_run": "no"}, [], "annotation 'bool'"),
    ("annotated:run", {"period": "p", "count": None, "ratio": 2, "flag": True, "opts": {},
                       "items": ["a"], "maybe": 3, "anything": {1, 2}.__class__.__name__}, [], None),
    ("annotated:run", {"period": "p", "count": "3"}, [], "annotation 'int | None'"),
    ("annotated:run", {"period": "p", "ratio": "x"}, [], "annotation 'float'"),
    ("annotated:run", {"period": "p", "opts": []}, [], "annotation 'dict | None'"),
    ("annotated:run", {"period": "p", "items": {}}, [], "annotation 'list[str] | None'"),
    ("annotated:run", {"period": "p", "maybe": 1.5}, [], "annotation 'Optional[int]'"),
    ("annotated:run", {"period": "p", "count": True}, [], "annotation 'int | None'"),
    ("nowhere:run", {}, [], "no module named 'nowhere'"),
])
def test_validate(shared_worker, reference, kwargs, context_keys, fragment):
    msg = shared_worker.validate(reference, kwargs, context_keys)
    if fragment is None:
        assert msg == [RESULT, shared_worker.next_call, None]
    else:
        assert msg[0] == EXCEPTION and msg[2] == "reference", msg
        assert fragment in msg[4], msg[4]


# ------------------------------------------------------------------------- lifecycle


def test_shutdown_exits_zero(worker):
    assert worker.shutdown() == 0


def test_eof_exits_zero(worker):
    worker.sock.shutdown(socket.SHUT_WR)
    assert worker.proc.wait(DEADLINE) == 0


def test_protocol_version_mismatch_exits_two(plugins):
    ours, theirs = socket.socketpair()
    proc = spawn_on_fd3(worker_command(plugins, protocol_version=protocol.PROTOCOL_VERSION + 1), theirs)
    theirs.close()
    try:
        out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 2
        theirs_version = f"protocol {protocol.PROTOCOL_VERSION + 1}".encode()
        assert theirs_version in err and err.count(b"\n") == 1
    finally:
        ours.close()


def test_garbage_from_the_supervisor_exits_three(worker):
    worker.sock.sendall(protocol.frame(b"\x92\x63\x01"))  # unknown type 99
    assert worker.proc.wait(DEADLINE) == 3
    assert b"unknown message type 99" in worker.proc.stderr.read()


def test_oversized_frame_from_the_supervisor_exits_three(worker):
    worker.sock.sendall(b"\x7f\xff\xff\xff")  # 2 GiB announced, nothing sent
    assert worker.proc.wait(DEADLINE) == 3
    assert b"exceeds the frame limit of 67108864 bytes" in worker.proc.stderr.read()


def test_sys_path_puts_plugins_first_and_drops_cwd(plugins, tmp_path):
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing" / "__init__.py").write_text("raise RuntimeError('cwd shadowed plugins')\n")
    ours, theirs = socket.socketpair()
    proc = spawn_on_fd3(worker_command(plugins), theirs, cwd=str(tmp_path))
    theirs.close()
    from conftest import Supervisor

    sup = Supervisor(proc, ours)
    try:
        assert sup.recv()[0] == protocol.HANDSHAKE
        assert sup.call("billing.invoicing:identity", {"value": 1})[2] == 1
    finally:
        sup.close()


# ------------------------------------------------------------------------- dispatch


def test_type_error_inside_a_plugin_is_raised_not_a_reference_problem(shared_worker):
    msg = shared_worker.call("dispatchy:raises_type_error", {"x": 2})
    assert msg[2:5] == ["raised", "TypeError", "mine: 2"]
    assert "raises_type_error" in msg[5]
    msg = shared_worker.call("dispatchy:raises_type_error", {"y": 2})  # cached plan now
    assert msg[2] == "reference" and "unexpected keyword argument 'y'" in msg[4]


def test_signature_problems_of_other_callables(shared_worker):
    msg = shared_worker.call("dispatchy:decorated", {"period": "p", "extra": 1})
    assert msg[2] == "reference" and "unexpected keyword argument 'extra'" in msg[4]
    assert shared_worker.call("dispatchy:decorated", {"period": "p"})[2] == ["p", "none"]
    msg = shared_worker.call("dispatchy:positional_only", {"a": 5})
    assert msg[2] == "reference" and "unexpected keyword argument 'a'" in msg[4]
    assert shared_worker.call("dispatchy:positional_only", {"b": 5})[2] == [1, 5]
    msg = shared_worker.call("dispatchy:Made", {})
    assert msg[2] == "reference" and "missing the required parameter 'n'" in msg[4]
    msg = shared_worker.call("dispatchy:Made", {"n": 1})
    assert msg[2] == "encode"  # called; an object is not a wire type


def test_repeated_calls_and_context_variants(shared_worker):
    for i in range(3):  # the plan is cached after the first
        msg = shared_worker.call("billing.invoicing:strict", {"period": str(i)},
                                 {"job_id": "j", "other": 1} if i == 1 else {})
        assert msg[2] == [str(i), "j" if i == 1 else "none"]
    msg = shared_worker.call("billing.invoicing:strict", {}, {"period": "from-context"})
    assert msg[2] == ["from-context", "none"]
    msg = shared_worker.call("billing.invoicing:strict", {"job_id": "j"})
    assert msg[2] == "reference" and "missing the required parameter 'period'" in msg[4]


@pytest.mark.parametrize("value", [None, True, False, 0, 127, 128, 65536, -1, -33, 2**63 - 1,
                                   -2**63, 1.5, "", "x" * 31, "y" * 32, "z" * 70000, "é"])
def test_small_results_are_encoded_like_the_codec(shared_worker, value):
    call_id = shared_worker.start_call("billing.invoicing:identity", {"value": value})
    body = shared_worker.recv_raw()
    assert body == protocol.build_result(call_id, value, CODEC)


def test_small_results_that_cannot_cross(shared_worker):
    msg = shared_worker.call("dispatchy:huge")
    assert msg[2:5] == ["encode", "snakepit_shim.EncodeError",
                        "result: int 18446744073709551616 is outside the signed 64-bit range"]
    msg = shared_worker.call("dispatchy:lone_surrogate")
    assert msg[2:5] == ["encode", "snakepit_shim.EncodeError",
                        "result: str is not valid UTF-8 (a lone surrogate)"]


def test_large_call_frames(shared_worker):
    # bigger than the worker's 64 KiB receive buffer, one after another
    for n in (65531, 65532, 70000, 1 << 20, 10):
        assert shared_worker.call("dispatchy:size", {"value": b"x" * n})[2] == n


def test_frames_in_pieces_and_many_frames_in_one_write(shared_worker):
    sup = shared_worker
    frame = protocol.frame(protocol.build_call(8001, "dispatchy:size", {"value": "abc"}, {}, CODEC))
    for cut in (1, 3, 4, 5, len(frame) - 1):  # header and body split across reads
        sup.sock.sendall(frame[:cut])
        time.sleep(0.05)
        sup.sock.sendall(frame[cut:])
        assert sup.recv_until((RESULT, EXCEPTION)) == [RESULT, 8001, 3]
    # many frames in one write, some straddling the end of the receive buffer
    sizes = [30000, 10, 30000, 20000, 5, 70000, 3, 40000, 40000]
    data = b"".join(
        protocol.frame(protocol.build_call(8100 + i, "dispatchy:size", {"value": "v" * n}, {},
                                           CODEC))
        for i, n in enumerate(sizes))
    sup.sock.sendall(data)
    for i, n in enumerate(sizes):
        assert sup.recv_until((RESULT, EXCEPTION)) == [RESULT, 8100 + i, n]


def test_host_request_from_a_thread_between_calls(shared_worker):
    # The thread's request goes out once the call is over: the main loop, waiting for
    # the next CALL, reads the reply and hands it to the thread.
    sup = shared_worker
    sup.host_requests.clear()
    sup.call("dispatchy:background_request", {"payload": {"n": 1}, "wait": True})
    sup.call("dispatchy:release_background_request")
    req = sup.recv_until((protocol.HOST_REQUEST,))
    assert req[2] is None and req[4] == {"n": 1}  # between calls: no call id
    sup.answer(req)
    assert sup.call("dispatchy:background_reply")[2] == {"n": 1}


def test_thread_reading_while_the_next_call_arrives(shared_worker):
    # The thread waits for its reply (and so reads the socket) when the next CALL comes:
    # it hands the CALL to the main loop, which then reads the late reply for it.
    sup = shared_worker
    sup.auto_echo = False
    try:
        sup.host_requests.clear()
        sup.call("dispatchy:background_request", {"payload": "late"})
        # the request may come before or after the RESULT
        req = sup.host_requests[0] if sup.host_requests else sup.recv_until(
            (protocol.HOST_REQUEST,))
        time.sleep(0.1)  # the thread is reading by now
        assert sup.call("billing.invoicing:identity", {"value": 5})[2] == 5
        sup.answer(req)
        assert sup.call("dispatchy:background_reply")[2] == "late"
    finally:
        sup.auto_echo = True


@pytest.mark.parametrize("log", [False, True])
def test_first_thread_to_use_the_channel_while_the_main_loop_reads(worker, log):
    # A fresh worker: the main loop reads without the reader token until a thread uses
    # the channel; that thread's request goes out while the main loop is blocked in its
    # read, which then reads the reply and hands it (and the token) to the thread.
    worker.call("dispatchy:background_request", {"payload": [1, 2], "delay": 0.3, "log": log})
    req = worker.recv_until((protocol.HOST_REQUEST,))
    assert req[2] is None and req[4] == [1, 2]
    if log:
        assert [m[3:5] for m in worker.logs] == [["dispatchy", "thread here"]]
    worker.answer(req)
    time.sleep(0.1)
    assert worker.call("dispatchy:background_reply")[2] == [1, 2]
    for i in range(3):  # and the main loop goes on, with the token now
        assert worker.call("billing.invoicing:identity", {"value": i})[2] == i
