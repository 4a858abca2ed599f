"""redis-py alone in a fresh process: ``python -m benchmarks.alone PORT KEY``.

The cross-check of the suite's sampling (issue 20). A redis-py user's process runs
redis-py and little else; the suite's process also holds gRPC channels, Pykka actors
and their threads, and a figure measured there is only the user's figure if nothing
of that leaks into it. So the suite runs this program, which imports redis-py and
msgpack and nothing of the suite or of dspex_actors, on the suite's own core, against
the run's ``redis-server``, and samples its ``GET`` in turns with the suite's own
``GET`` (:mod:`benchmarks.timing`): the suite sends one line per turn and waits for
the answer, so machine noise falls on both alike.
:func:`benchmarks.peers.alone_op` is the suite's side; the targets hold the in-suite
GET's p50 to this one's (``benchmarks/targets.toml``).

The call is the suite's ``redis-py GET`` (:meth:`benchmarks.peers.RedisPeer.get`): a
``GET`` on redis-py's default connection pool and the value unpacked with msgpack.
Protocol: the program connects, warms up (``WARMUP`` calls), prints ``ready``, then
answers each line ``block LEAD COUNT`` (``LEAD`` untimed calls, then ``COUNT`` timed,
the garbage collector paused, as ``timeit`` does) with one JSON line of the ``COUNT``
calls' ns; ``quit`` or the end of its input ends it.
"""

from __future__ import annotations

import gc
import json
import sys
import time

WARMUP = 200


def main(port: int, key: str) -> None:
    import msgpack
    import redis  # type: ignore[import-not-found, unused-ignore]

    client = redis.Redis(host="127.0.0.1", port=port)

    def get() -> object:
        return msgpack.unpackb(client.get(key))

    for _ in range(WARMUP):
        get()
    print("ready", flush=True)
    clock = time.perf_counter_ns
    for line in sys.stdin:
        words = line.split()
        if words[:1] != ["block"]:
            break
        lead, count = int(words[1]), int(words[2])
        ns = []
        gc.disable()
        try:
            for _ in range(lead):
                get()
            for _ in range(count):
                started = clock()
                get()
                ns.append(clock() - started)
        finally:
            gc.enable()
        print(json.dumps(ns), flush=True)
    client.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m benchmarks.alone PORT KEY")
    main(int(sys.argv[1]), sys.argv[2])
