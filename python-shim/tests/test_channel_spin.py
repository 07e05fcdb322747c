"""The poll before a host request's reply backs off when it keeps running out
(``Channel._recv_soon``): a supervisor on the same CPU, or a slow request, must not cost
a spin per request."""

import socket

from snakepit_shim import channel
from snakepit_shim.codec import select_codec


class _Socket:
    """Nothing to read unless ``ready``; a blocking read is the end of the stream."""

    def __init__(self):
        self.ready = False
        self.polls = 0

    def recv_into(self, view, n=0, flags=0):
        if self.ready:
            self.ready = False
            view[0:1] = b"x"
            return 1
        if flags & socket.MSG_DONTWAIT:
            self.polls += 1
            raise BlockingIOError
        return 0


def test_a_poll_that_runs_out_skips_the_next_chances_and_one_that_finds_data_starts_over(
    monkeypatch,
):
    monkeypatch.setattr(channel, "SPIN_NS", 0)
    ours, _peer = socket.socketpair()
    ch = channel.Channel(ours, 1 << 20, select_codec())
    ch.sock = sock = _Socket()
    skipped = []
    for _ in range(8):
        assert ch._recv_soon() == 0  # polled, nothing came
        polls = sock.polls
        n = 0
        while ch.spin_skip:
            assert ch._recv_soon() == 0
            n += 1
        assert sock.polls == polls  # the skipped chances did not poll
        skipped.append(n)
    assert skipped == [2, 4, 8, 16, 32, 64, 64, 64]
    sock.ready = True
    assert ch._recv_soon() == 1  # a poll that finds its data
    assert (ch.spin_misses, ch.spin_skip) == (0, 0)
