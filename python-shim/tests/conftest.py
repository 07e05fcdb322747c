"""A fake supervisor: starts the real shim as a subprocess on a socketpair and speaks the
protocol to it, answering host requests for the built-in "echo" method and for the
methods a test puts in ``Supervisor.methods``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

SHIM_PARENT = Path(__file__).resolve().parents[1]  # python-shim/
REPO = SHIM_PARENT.parent
FRAMES = REPO / "fixtures" / "frames"
sys.path.insert(0, str(SHIM_PARENT))

from snakepit_shim import codec as codec_mod  # noqa: E402
from snakepit_shim import protocol  # noqa: E402

BOOT = (
    "import sys; sys.path.append(sys.argv[1]); "
    "from snakepit_shim.main import main; main(sys.argv[2:])"
)
CODEC = codec_mod.select_codec()
DEADLINE = 10.0


def worker_command(plugins: Path, mode: str = "worker", protocol_version: int = protocol.PROTOCOL_VERSION,
                   frame_limit: int = 67108864, extra: Optional[List[str]] = None) -> List[str]:
    return [
        sys.executable, "-c", BOOT, str(SHIM_PARENT), mode,
        "--fd", "3", "--protocol", str(protocol_version), "--frame-limit", str(frame_limit),
        "--sys-path", str(plugins), "--pool", "default", "--generation", "0", "--worker-id", "3",
    ] + (extra or [])


def spawn_on_fd3(cmd: List[str], sock: socket.socket, **kw: Any) -> subprocess.Popen:
    fd = sock.fileno()

    def put_on_fd3() -> None:
        if fd != 3:
            os.dup2(fd, 3)  # dup2 clears close-on-exec on 3
        else:
            os.set_inheritable(3, True)

    return subprocess.Popen(cmd, pass_fds=(3,), preexec_fn=put_on_fd3,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


class Refused(Exception):
    """Raised by a fake host method: the reply is ``ok = false``, ``[type, message]``."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message


class Supervisor:
    """Our end of one worker's socket."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, limit: int = 67108864) -> None:
        self.proc = proc
        self.sock = sock
        self.frames = protocol.FrameBuffer(limit)
        self.logs: List[list] = []
        self.usages: List[list] = []
        self.host_requests: List[list] = []
        self.auto_echo = True
        # method -> handler(payload) -> reply value (or raise Refused); "echo" is built in
        self.methods: Dict[str, Callable[[Any], Any]] = {"echo": lambda payload: payload}
        self.next_call = 100

    # framing
    def send(self, body: bytes) -> None:
        self.sock.sendall(protocol.frame(body))

    def recv_raw(self, timeout: float = DEADLINE) -> bytes:
        """The next frame's body; USAGE frames (before every call's answer) are collected
        in ``usages``."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.frames.next_frame()
            if body is not None and body[:2] == b"\x95\x14":
                self.usages.append(CODEC.decode(body))
                continue
            if body is not None:
                return body
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the worker in time")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("worker closed the socket")
            self.frames.feed(data)

    def recv(self, timeout: float = DEADLINE) -> list:
        return CODEC.decode(self.recv_raw(timeout))

    def recv_until(self, types: tuple, timeout: float = DEADLINE) -> list:
        """Next message of one of ``types``; LOGs are collected, echo requests answered."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if msg[0] in types:
                return msg
            if msg[0] == protocol.LOG:
                self.logs.append(msg)
            elif msg[0] == protocol.HOST_REQUEST:
                self.host_requests.append(msg)
                if self.auto_echo:
                    self.answer(msg)
            else:
                raise AssertionError(f"unexpected message {msg!r}")

    def answer(self, msg: list) -> None:
        _, request_id, _call_id, method, payload = msg
        handler = self.methods.get(method)
        if handler is None:
            ok, value = False, ["UnknownMethod", f"no handler for {method!r}"]
        else:
            try:
                ok, value = True, handler(payload)
            except Refused as refused:
                ok, value = False, [refused.type_name, refused.message]
        self.send(protocol.build_host_reply(request_id, ok, value, CODEC))

    # calls
    def start_call(self, reference: str, kwargs: Optional[Dict[str, Any]] = None,
                   context: Optional[Dict[str, Any]] = None, measure: bool = False) -> int:
        self.next_call += 1
        self.send(protocol.build_call(self.next_call, reference, kwargs or {}, context or {}, CODEC,
                                      measure))
        return self.next_call

    def call(self, reference: str, kwargs: Optional[Dict[str, Any]] = None,
             context: Optional[Dict[str, Any]] = None, timeout: float = DEADLINE,
             measure: bool = False) -> list:
        call_id = self.start_call(reference, kwargs, context, measure)
        msg = self.recv_until((protocol.RESULT, protocol.EXCEPTION), timeout)
        assert msg[1] == call_id, msg
        return msg

    def validate(self, reference: str, kwargs: Dict[str, Any], context_keys: List[str]) -> list:
        self.next_call += 1
        self.send(protocol.build_validate(self.next_call, reference, kwargs, context_keys, CODEC))
        msg = self.recv_until((protocol.RESULT, protocol.EXCEPTION))
        assert msg[1] == self.next_call
        return msg

    def cancel(self, call_id: int) -> None:
        self.send(protocol.build_cancel(call_id))
        os.kill(self.proc.pid, signal.SIGUSR1)

    def shutdown(self, timeout: float = DEADLINE) -> int:
        self.send(protocol.build_shutdown())
        return self.proc.wait(timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(DEADLINE)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


def start_worker(plugins: Path, **kw: Any) -> Supervisor:
    ours, theirs = socket.socketpair()
    proc = spawn_on_fd3(worker_command(plugins, **kw), theirs)
    theirs.close()
    sup = Supervisor(proc, ours)
    return sup


PLUGINS = {
    "billing/__init__.py": "",
    "billing/invoicing.py": '''
        import asyncio, logging, sys, time
        log = logging.getLogger(__name__)

        def run(*, period: str, dry_run: bool = False, **ctx):
            log.info("drafts=%d", 3)
            return {"period": period, "dry_run": dry_run, "ctx": sorted(ctx)}

        def strict(period: str, job_id: str = "none"):
            return [period, job_id]

        async def arun(*, n: int):
            await asyncio.sleep(0)
            return {"n": n * 2}

        def sleeper(seconds: float = 60):
            time.sleep(seconds)
            return "woke"

        async def asleeper(seconds: float = 60):
            await asyncio.sleep(seconds)
            return "woke"

        async def blocking_in_async(seconds: float = 60):
            time.sleep(seconds)  # blocks the event loop: only the signal gets in
            return "woke"

        def chained():
            try:
                {}["missing"]
            except KeyError as exc:
                raise ValueError("bad period") from exc

        class Oops(Exception):
            pass

        def custom():
            raise Oops("custom")

        def exits():
            raise SystemExit(5)

        def printer(n: int = 3):
            for i in range(n):
                print("line", i)
            print("partial", end="")
            sys.stderr.write("err line\\n")
            return n

        def logs_exception():
            try:
                1 / 0
            except ZeroDivisionError:
                log.exception("it broke")

        def bad_result():
            return {"rows": [{}, {}, {}, {"when": {1, 2}}]}

        def big_result(size: int):
            return b"x" * size

        def identity(value=None):
            return value

        def busy():
            while True:
                pass

        def print_forever():
            i = 0
            while True:
                print("tick", i)
                i += 1

        _go = None

        def start_background_logger():
            import threading
            global _go
            _go = threading.Event()

            def later():
                _go.wait(10)
                time.sleep(0.2)  # after the releasing call has answered
                log.warning("from a thread between calls")

            threading.Thread(target=later, daemon=True).start()

        def release_background_logger():
            _go.set()

        def surrogate_error():
            log.warning("bad \\udcff name")
            raise ValueError("bad \\udcff name")

        def broken_tz():
            import datetime

            class Broken(datetime.tzinfo):
                def utcoffset(self, dt):
                    raise RuntimeError("no offset")

            return {"when": datetime.datetime(2026, 1, 1, tzinfo=Broken())}

        def spawn_grandchild(pid_file: str):
            import os, subprocess
            child = subprocess.Popen(["sleep", "300"])  # in the worker's process group
            with open(pid_file + ".tmp", "w") as f:
                f.write(str(child.pid))
            os.rename(pid_file + ".tmp", pid_file)
            return child.pid

        not_callable = 42
    ''',
    "hosty.py": '''
        import asyncio, threading
        from concurrent.futures import ThreadPoolExecutor
        from snakepit_shim import host_request, host_request_async, HostError

        def sync_echo(x=1):
            return host_request("echo", {"x": x})

        async def async_echo(x=1):
            return await host_request_async("echo", {"x": x})

        async def sync_inside_async(x=1):
            return host_request("echo", {"x": x})

        async def gathered(n=5):
            return await asyncio.gather(*(host_request_async("echo", i) for i in range(n)))

        def from_threads(n=4):
            with ThreadPoolExecutor(n) as pool:
                return sorted(pool.map(lambda i: host_request("echo", i), range(n)))

        async def threads_in_async(n=4):
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(n) as pool:
                futs = [loop.run_in_executor(pool, host_request, "echo", i) for i in range(n)]
                mine = await host_request_async("echo", "loop")
                return [mine] + sorted(await asyncio.gather(*futs))

        def own_loop():
            async def inner():
                return await host_request_async("echo", "own")
            return asyncio.run(inner())

        def unknown():
            try:
                host_request("nope", None)
            except HostError as exc:
                return [exc.type, exc.message]

        def sleep_in_host():
            # the supervisor never answers "hang"; a cancel must still get through
            return host_request("hang", None)
    ''',
    "dispatchy.py": '''
        import functools, logging, threading, time
        from snakepit_shim import host_request

        def raises_type_error(x=1):
            raise TypeError(f"mine: {x}")

        def _deco(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                return func(*args, **kwargs)
            return wrapper

        @_deco
        def decorated(period: str, job_id: str = "none"):
            return [period, job_id]

        def positional_only(a=1, /, b=2):
            return [a, b]

        class Made:
            def __init__(self, n: int):
                self.n = n

        def size(value=None):
            return len(value)

        def huge():
            return 2 ** 64

        def lone_surrogate():
            return "a\\udcff"

        _box = {}

        def background_request(payload=None, wait=False, delay=0.0, log=False):
            """A thread sends a host request (at once, after ``delay``, or once released)
            and keeps the reply for background_reply()."""
            _box.clear()
            go = _box["go"] = threading.Event()
            if not wait:
                go.set()

            def run():
                go.wait(10)
                time.sleep(delay)
                if log:
                    logging.getLogger("dispatchy").warning("thread here")
                _box["reply"] = host_request("echo", payload)

            thread = _box["thread"] = threading.Thread(target=run, daemon=True)
            thread.start()

        def release_background_request():
            _box["go"].set()

        def background_reply(timeout: float = 5.0):
            _box["thread"].join(timeout)
            return _box.get("reply", "no reply")
    ''',
    "costly.py": '''
        import time

        def burn(ms: int):
            end = time.process_time() + ms / 1000
            while time.process_time() < end:
                pass
            return ms

        def grow(mib: int):
            block = b"x" * (mib << 20)  # written, so resident
            return len(block)
    ''',
    "dated.py": '''
        from __future__ import annotations
        from datetime import date

        def run(*, day: date, text: str, month: date, plain=None, maybe: date | None = None):
            return [day, text, month, plain, maybe]
    ''',
    "broken.py": "def f(:\n",
    "slow_import.py": "import time\ntime.sleep(60)\ndef f():\n    return 1\n",
    "raises_on_import.py": "raise RuntimeError('import-time failure')\n",
    "annotated.py": '''
        from __future__ import annotations
        from typing import Optional

        def run(*, period: str, count: int | None = None, ratio: float = 1.0,
                flag: bool = False, opts: dict | None = None, items: list[str] | None = None,
                maybe: Optional[int] = None, anything=None, **ctx) -> dict | None:
            return None
    ''',
}


def write_plugins(root: Path) -> Path:
    for name, text in PLUGINS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_plugins(tmp_path_factory.mktemp("plugins"))


@pytest.fixture
def worker(plugins: Path):
    """A fresh worker after its handshake."""
    sup = start_worker(plugins)
    hs = sup.recv()
    assert hs[0] == protocol.HANDSHAKE, hs
    try:
        yield sup
    finally:
        sup.close()


@pytest.fixture(scope="module")
def shared_worker(plugins: Path):
    """One worker reused by the tests of a module that leave it usable."""
    sup = start_worker(plugins)
    hs = sup.recv()
    assert hs[0] == protocol.HANDSHAKE, hs
    try:
        yield sup
    finally:
        sup.close()
