"""A userspace link with a delay: copies Ethernet frames between two interfaces, holding each one
for a set time. For packet-level test networks (`qora_p2p.testnet.netns`), whose kernel may lack
``tc netem``.

    python -m qora_p2p.testnet.delay IFACE_A IFACE_B      # reads "DELAY_MS\\n" lines on stdin

Theory of operation
-------------------
Two raw packet sockets (``AF_PACKET``), one bound to each interface, inside the namespace that
holds both (the run starts this process there with ``ip netns exec``). Every frame that arrives on
one interface is queued for the other with a release time of ``now + delay``; a direction's queue
is FIFO and release times never go backwards, so a delay change never reorders frames, as on a
real link. The interfaces have no addresses, so the kernel does nothing else with the frames.
The member's side has checksum and segmentation offloads turned off by the network builder, so
every frame is complete and at most one MTU.

Limits: at most `QUEUE_BYTES_MAX` bytes wait per direction (a full queue drops new frames, like a
router's tail drop); a line on stdin is at most `CONTROL_LINE_BYTES_MAX` bytes. The process
exits when stdin closes (its runner is gone) or on SIGTERM.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import sys
import time

__all__ = ["Direction", "Forwarder", "parse_delay", "run"]

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # a frame this host sent: it is not ours to forward
FRAME_BYTES_MAX = 65_535 + 14  # an Ethernet frame with any payload a socket can carry
QUEUE_BYTES_MAX = 16 << 20  # per direction
CONTROL_LINE_BYTES_MAX = 64
DELAY_MS_MAX = 10_000


def parse_delay(line: bytes) -> int:
    """One control line: the delay in milliseconds, an integer in 0..DELAY_MS_MAX.

    Raises:
        ValueError: anything else.
    """
    text = line.strip().decode("ascii")
    if not text.isdigit() or not 0 <= int(text) <= DELAY_MS_MAX:
        raise ValueError(f"delay must be an integer in 0..{DELAY_MS_MAX} ms, got {text!r}")
    return int(text)


class Direction:
    """The frames waiting to leave one interface: FIFO, bounded in bytes."""

    def __init__(self, limit: int = QUEUE_BYTES_MAX) -> None:
        self.frames: collections.deque[tuple[float, bytes]] = collections.deque()
        self.bytes = 0
        self.limit = limit
        self.dropped = 0
        self.last_release = 0.0

    def push(self, frame: bytes, release: float) -> None:
        if self.bytes + len(frame) > self.limit:
            self.dropped += 1
            return
        release = max(release, self.last_release)  # never overtake a frame queued earlier
        self.last_release = release
        self.frames.append((release, frame))
        self.bytes += len(frame)

    def due(self, now: float) -> list[bytes]:
        out = []
        while self.frames and self.frames[0][0] <= now:
            out.append(self.frames.popleft()[1])
            self.bytes -= len(out[-1])
        return out

    def next_release(self) -> float | None:
        return self.frames[0][0] if self.frames else None


def _socket(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    sock.setblocking(False)
    return sock


class Forwarder:  # pragma: no cover (needs root and a namespace; tests/netns runs it)
    """The two sockets, their queues and the control stream of one delayed link."""

    def __init__(self, a: str, b: str, delay_ms: int) -> None:
        self.sockets = {a: _socket(a), b: _socket(b)}
        self.other = {a: b, b: a}
        self.queues = {a: Direction(), b: Direction()}  # frames to send out of that interface
        self.control = sys.stdin.fileno()
        self.pending = b""
        self.delay = delay_ms / 1000

    def read_control(self) -> bool:
        """Apply the control lines that arrived; False when stdin closed (the runner is gone)."""
        chunk = os.read(self.control, 4096)
        if not chunk:
            return False
        self.pending += chunk
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            try:
                self.delay = parse_delay(line) / 1000
            except (ValueError, UnicodeDecodeError) as error:
                print(f"qora delay: ignored control line: {error}", file=sys.stderr, flush=True)
        if len(self.pending) > CONTROL_LINE_BYTES_MAX:
            self.pending = b""
        return True

    def receive(self, name: str, now: float) -> None:
        source, queue = self.sockets[name], self.queues[self.other[name]]
        for _ in range(256):  # bounded work per wake-up, then look at the other side
            try:
                frame, address = source.recvfrom(FRAME_BYTES_MAX)
            except BlockingIOError:
                return
            except OSError:
                return  # the link went down (ENETDOWN is reported once); it may come up again
            if address[2] != PACKET_OUTGOING:
                queue.push(frame, now + self.delay)

    def send_due(self, now: float) -> None:
        for name, queue in self.queues.items():
            for frame in queue.due(now):
                try:
                    self.sockets[name].send(frame)
                except OSError:
                    queue.dropped += 1  # a full device queue or a link that is down: the frame is lost

    def run(self) -> None:
        names = {sock.fileno(): name for name, sock in self.sockets.items()}
        while True:
            releases = [release for queue in self.queues.values() if (release := queue.next_release()) is not None]
            timeout = None if not releases else max(0.0, min(releases) - time.monotonic())
            ready, _, _ = select.select([*names, self.control], [], [], timeout)
            now = time.monotonic()
            for fd in ready:
                if fd == self.control:
                    if not self.read_control():
                        return
                else:
                    self.receive(names[fd], now)
            self.send_due(now)


def run(a: str, b: str, delay_ms: int = 0) -> None:  # pragma: no cover (see Forwarder)
    """Forward frames between interfaces ``a`` and ``b`` until stdin closes."""
    Forwarder(a, b, delay_ms).run()


def main(argv: list[str] | None = None) -> int:  # pragma: no cover (see run)
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        run(args[0], args[1], parse_delay(args[2].encode()) if len(args) == 3 else 0)
    except KeyboardInterrupt:
        return 0
    except OSError as error:
        print(f"qora delay: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
