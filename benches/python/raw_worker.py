"""The raw ping-pong worker: the least a Python worker can do per call.

Blocking ``recv`` on the socket inherited as fd 3, decode the CALL frame with the shim's
codec (python-shim/snakepit_shim/codec.py: the msgpack C extension when importable,
``SNAKEPIT_SHIM_CODEC=stdlib`` forces the stdlib one), call the function named by the
reference's function part from bench_plugin, encode a RESULT with the same codec,
``sendall``. No threads, no signals, no logging bridge, no reference resolution.

The function ``rows_bytes`` is special: the RESULT frame of ``rows()`` is encoded once and
the same bytes are pushed on every call (the transport floor of a large result).
"""

import os
import socket
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python-shim"))
sys.path.insert(0, HERE)

from snakepit_shim.codec import select_codec  # noqa: E402

import bench_plugin  # noqa: E402

LEN = struct.Struct(">I")


def main():
    fd = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    codec = select_codec()
    encode, decode = codec.encode, codec.decode
    funcs = {
        "echo": bench_plugin.echo,
        "rows": bench_plugin.rows,
        "pid": bench_plugin.pid,
        "codec_name": bench_plugin.codec_name,
    }
    rows_body = encode([16, 0, bench_plugin.rows()])
    rows_frame = LEN.pack(len(rows_body)) + rows_body
    recv, sendall, unpack_from = sock.recv, sock.sendall, LEN.unpack_from
    buf = b""
    while True:
        # one recv per small frame; loop only for a frame that came in pieces
        while len(buf) < 4 or len(buf) < 4 + unpack_from(buf)[0]:
            chunk = recv(1 << 16)
            if not chunk:
                return
            buf += chunk
        n = unpack_from(buf)[0]
        body, buf = buf[4 : 4 + n], buf[4 + n :]
        msg = decode(body)
        # [1, call_id, "module:function", kwargs, context, measure]
        call_id, reference, kwargs = msg[1], msg[2], msg[3]
        name = reference.rpartition(":")[2]
        if name == "rows_bytes":
            sendall(rows_frame)
            continue
        value = funcs[name](**kwargs)
        out = encode([16, call_id, value])
        sendall(LEN.pack(len(out)) + out)


if __name__ == "__main__":
    main()
