"""A load client process: ``python -m benchmarks.load echo|get ADDRESS SESSION COUNT``.

It warms up, prints ``ready``, waits for a line on stdin, makes COUNT calls back to
back and prints ``done``; the parent times all clients from "go" to the last "done".
"""

from __future__ import annotations

import sys

import grpc

from benchmarks.servers import all_cores, echo_stub
from dspex_actors.bridge import BridgedState


def main(mode: str, address: str, session_id: str, count: int) -> None:
    all_cores()
    if mode == "echo":
        channel = grpc.insecure_channel(address)
        echo = echo_stub(channel)

        def call() -> object:
            return echo(b"\x00" * 16, timeout=10)

        close = channel.close
    else:
        state = BridgedState.init(session_id=session_id, address=address, timeout=10)

        def call() -> object:
            return state.get_variable("temperature")

        close = state.cleanup
    for _ in range(50):
        call()
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(count):
        call()
    print("done", flush=True)
    close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
