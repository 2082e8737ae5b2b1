"""The hardware-in-the-loop wire protocol, version 1: host <-> emulated board.

Transport: a byte stream (TCP on localhost or a Unix socket). Every message
is one frame; a request gets exactly one reply, in order.

Frame::

    offset  size  field
    0       4     magic b"SNNH"
    4       1     protocol version (1)
    5       1     message type (below)
    6       2     reserved, 0
    8       4     body length in bytes, unsigned big-endian (at most MAX_BODY)
    12      ...   body

Body::

    4 bytes   meta length M, unsigned big-endian
    M bytes   meta: a UTF-8 JSON object
    ...       array data: the raw bytes of each array listed in meta["arrays"],
              in that order, C-contiguous, no padding

``meta["arrays"]`` is a list of ``{"name": str, "dtype": str, "shape": [int]}``
with dtype one of ``ARRAY_DTYPES`` (numpy type strings, little-endian).
The array bytes must add up to exactly what remains of the body.

Requests and their replies (``OK`` unless the request failed):

- ``INFO``: meta of the reply is the board's I/O contract (input shape and
  levels, steps, latency, output layer, readout, lanes, layers and depths).
- ``LOAD``: meta ``{"lanes": int, "reset_interval": int | null}``, optional
  array ``program`` (uint8: the bytes of a ``program.h5``); without it the
  board reloads the program it was started with. Reply: the new INFO.
- ``STEP``: array ``inputs``, (steps, *input_shape) or (steps, lanes,
  *input_shape) integers; meta ``{"probe": bool | [layer names]}``.
  Reply arrays: ``output`` (output-layer spikes per step, uint8) and, per
  probed layer L, ``spikes/L``, ``u/L``, ``v/L``; meta ``{"t": chip step
  after this block, "compute_seconds": float}``.
- ``RESET``: zero the neuron state and the delay buffers. Counters stay.
- ``COUNTERS``: reply meta is the counters (steps, spikes, synaptic_ops, ...).
- ``SHUTDOWN``: the server replies, then stops serving every connection and exits.
- ``HELLO``: meta ``{"token": str}``, the shared token of a board started
  with one; on such a board it must be a connection's first request. Reply
  meta: ``{"protocol": 1, "limits": {...}}``, the board's limits.

``ERROR`` replies carry meta ``{"error": message, "kind": kind}``. A frame
whose header is unreadable (bad magic, other version, body over
``MAX_BODY`` or over the receiver's own limit) gets an ERROR and the
connection is closed, since the stream can no longer be split into frames;
a well-framed but bad request (unknown type, bad JSON, meta over
``MAX_META``, wrong array sizes, invalid input) gets an ERROR and the
connection stays usable. A connection that ends mid-frame is dropped.
"""

from __future__ import annotations

import json
import math
import socket
import struct
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"SNNH"
VERSION = 1
HEADER = struct.Struct("!4sBBHI")
META_LENGTH = struct.Struct("!I")
MAX_BODY = 256 * 2**20
MAX_META = 2**20
TOKEN_ENV = "SNN_BOARD_TOKEN"  # where both sides find the shared token when none is given
SEND_BUFFERS = 512  # buffers per sendmsg call, under the kernel's IOV_MAX (1024)

INFO, LOAD, STEP, RESET, COUNTERS, SHUTDOWN, HELLO = 1, 2, 3, 4, 5, 6, 7
OK, ERROR = 64, 65
REQUESTS = {INFO: "info", LOAD: "load", STEP: "step", RESET: "reset", COUNTERS: "counters", SHUTDOWN: "shutdown",
            HELLO: "hello"}

ARRAY_DTYPES = ("|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<i8", "<f4", "<f8")


class ProtocolError(Exception):
    """A frame that breaks the protocol. ``fatal``: the stream cannot be split into frames any more."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


class ConnectionClosed(Exception):
    """The peer closed the connection (cleanly between frames, or mid-frame)."""


@dataclass
class Message:
    kind: int
    meta: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def encode(message: Message) -> bytes:
    """The frame for ``message``."""
    return b"".join(frame_parts(message))


def frame_parts(message: Message) -> list:
    """The frame for ``message`` as buffers (header and meta, then each array's own memory), so a large
    reply is sent without copying its arrays."""
    arrays, blobs = [], []
    for name, array in message.arrays.items():
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        array = array.astype(dtype, copy=False)
        if dtype.str not in ARRAY_DTYPES:
            raise ProtocolError(f"array {name!r}: dtype {dtype} cannot be sent; use one of {', '.join(ARRAY_DTYPES)}")
        arrays.append({"name": name, "dtype": dtype.str, "shape": list(array.shape)})
        blobs.append(memoryview(array.reshape(-1).view(np.uint8)))
    meta = json.dumps({**message.meta, "arrays": arrays}).encode()
    length = META_LENGTH.size + len(meta) + sum(len(blob) for blob in blobs)
    if length > MAX_BODY:
        raise ProtocolError(f"message body of {length} bytes exceeds the protocol's {MAX_BODY}")
    return [HEADER.pack(MAGIC, VERSION, message.kind, 0, length) + META_LENGTH.pack(len(meta)) + meta, *blobs]


def decode_header(header: bytes) -> tuple[int, int]:
    """(message type, body length) from the 12 header bytes."""
    magic, version, kind, _, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError("not an snn-compile hardware-in-the-loop frame (bad magic)", fatal=True)
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}; this side speaks version {VERSION}", fatal=True)
    if length > MAX_BODY:
        raise ProtocolError(f"frame body of {length} bytes exceeds the protocol's {MAX_BODY}", fatal=True)
    return kind, length


def decode_body(kind: int, body: bytes | bytearray) -> Message:
    """The message in ``body``; raises ``ProtocolError`` (not fatal) when it is malformed."""
    if len(body) < META_LENGTH.size:
        raise ProtocolError("body shorter than its meta length field")
    (meta_length,) = META_LENGTH.unpack_from(body)
    if meta_length > MAX_META:
        raise ProtocolError(f"meta of {meta_length} bytes exceeds the protocol's limit of {MAX_META} bytes")
    end = META_LENGTH.size + meta_length
    if end > len(body):
        raise ProtocolError(f"meta length {meta_length} runs past the body ({len(body)} bytes)")
    try:
        meta = json.loads(body[META_LENGTH.size:end].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"meta is not UTF-8 JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ProtocolError("meta must be a JSON object")
    specs = meta.pop("arrays", [])
    if not isinstance(specs, list):
        raise ProtocolError("meta 'arrays' must be a list")
    arrays, offset = {}, end
    for spec in specs:
        name, dtype, shape = _array_spec(spec)
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(body):
            raise ProtocolError(f"array {name!r} needs {nbytes} bytes, {len(body) - offset} remain")
        arrays[name] = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += nbytes
    if offset != len(body):
        raise ProtocolError(f"{len(body) - offset} bytes after the last array")
    return Message(kind, meta, arrays)


def _array_spec(spec) -> tuple[str, np.dtype, tuple[int, ...]]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ProtocolError("each array needs a name, a dtype and a shape")
    if spec.get("dtype") not in ARRAY_DTYPES:
        raise ProtocolError(f"array {spec['name']!r}: dtype {spec.get('dtype')!r} is not one of "
                            f"{', '.join(ARRAY_DTYPES)}")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31
                                              for d in shape):
        raise ProtocolError(f"array {spec['name']!r}: shape must be a list of non-negative integers")
    return spec["name"], np.dtype(spec["dtype"]), tuple(shape)


def receive_exactly(sock: socket.socket, size: int) -> bytearray:
    """``size`` bytes from ``sock``; ``ConnectionClosed`` if the stream ends first.

    The buffer grows with what arrives, so a header that announces a large
    body costs memory only as fast as the peer really sends it.
    """
    received = bytearray()
    while len(received) < size:
        chunk = sock.recv(min(size - len(received), 2**20))
        if not chunk:
            raise ConnectionClosed(f"connection closed {'mid-frame' if received else 'between frames'}")
        received += chunk
    return received


def receive(sock: socket.socket) -> Message:
    """The next message from ``sock``."""
    kind, length = decode_header(receive_exactly(sock, HEADER.size))
    return decode_body(kind, receive_exactly(sock, length))


def send(sock: socket.socket, message: Message) -> None:
    """Send ``message`` as one scatter-gather write: small replies leave in one segment (no Nagle delay),
    large arrays are not copied."""
    pending = [memoryview(part) for part in frame_parts(message) if len(part)]
    while pending:
        sent = sock.sendmsg(pending[:SEND_BUFFERS])
        while pending and sent >= len(pending[0]):
            sent -= len(pending[0])
            pending.pop(0)
        if sent:
            pending[0] = pending[0][sent:]


def error(message: str, kind: str) -> Message:
    return Message(ERROR, {"error": message, "kind": kind})
