"""The asyncio handles beside a bare ``grpc.aio`` echo and ``redis.asyncio``.

Every op here is awaited on one event loop of this process, a block at a time
(:data:`benchmarks.timing.Sampler`): ``lead`` untimed awaits, then each timed one
on its own, ``perf_counter_ns`` around a single ``await``. Blocks of every op,
ours and the peers', are interleaved round-robin like the other suites' ops, so
each peer is timed as its users would time it, in blocks, never right after one of
our calls. Servers run in processes of their own (the run's SessionStore, the bare
echo, Redis).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any

import grpc.aio

from benchmarks.servers import ECHO_METHOD, ECHO_STREAM_METHOD
from benchmarks.suite import Op, Run, alternating, sample_ops
from benchmarks.timing import Sampler
from dspex_actors.aio import AsyncBridgedState, AsyncLocalState, AsyncRedisState

SUITE = "aio"
NOOP = "aio.noop"
ECHO = "grpc.aio.echo"
STREAM_ECHO = "grpc.aio.stream.echo"
REDIS_GET = "redis.asyncio.get"
DICT = "aio.dict.get"

Call = Callable[[], Awaitable[object]]


def _sampler(loop: asyncio.AbstractEventLoop, call: Call, calls: int = 1) -> Sampler:
    """A block of awaits of ``call`` on ``loop``, each sample ``calls`` awaits timed
    together (ns per await: more than one only for sub-microsecond awaits, whose
    clock reads would outweigh them), as the sync suites sample their reads."""

    async def block(lead: int, count: int) -> list[float]:
        for _ in range(lead):
            await call()
        taken = []
        clock = time.perf_counter_ns
        for _ in range(count):
            started = clock()
            for _ in range(calls):
                await call()
            taken.append((clock() - started) / calls)
        return taken

    return lambda lead, count: loop.run_until_complete(block(lead, count))


async def _channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address)


async def _redis(port: int) -> Any:
    import redis.asyncio

    return redis.asyncio.Redis(host="127.0.0.1", port=port)


async def _noop() -> None:
    """An await that does nothing: what an async call costs before any work."""


def _op(
    loop: asyncio.AbstractEventLoop,
    id: str,
    label: str,
    backend: Any,
    op: str,
    call: Call,
    baseline: str | None,
    peers: tuple[str, ...] = (),
    calls: int = 1,
) -> Op:
    return Op(
        id,
        label,
        backend,
        op,
        lambda: None,
        calls=calls,
        sampler=_sampler(loop, call, calls),
        baseline=baseline,
        peers=peers,
    )


def run(run: Run) -> None:
    samples: int = run.pick(3000, 500)
    servers = run.servers
    store, echo_server, redis_server = servers.store(), servers.echo(), servers.redis()
    loop = asyncio.new_event_loop()
    # grpc.aio binds what is made outside a coroutine to the current loop: this one.
    asyncio.set_event_loop(loop)
    with ExitStack() as cleanup:
        cleanup.callback(asyncio.set_event_loop, None)
        cleanup.callback(loop.close)
        local = loop.run_until_complete(AsyncLocalState.init())
        cleanup.callback(lambda: loop.run_until_complete(local.aclose()))
        bridged = loop.run_until_complete(
            AsyncBridgedState.init(address=store.address, timeout=30)
        )
        cleanup.callback(lambda: loop.run_until_complete(bridged.aclose()))

        def attached(**options: Any) -> AsyncBridgedState:
            """Another handle on ``bridged``'s session, closed with the run."""
            handle = loop.run_until_complete(
                AsyncBridgedState.init(
                    address=store.address,
                    session_id=bridged.session_id,
                    create=False,
                    timeout=30,
                    **options,
                )
            )
            cleanup.callback(lambda: loop.run_until_complete(handle.aclose()))
            return handle

        unary = attached(stream=False)
        single = attached(coalesce=False)
        cached = attached(cache=True)
        plain = {"temperature": 0.7}
        channel = grpc.aio.insecure_channel(echo_server.address)
        cleanup.callback(lambda: loop.run_until_complete(channel.close(None)))
        echo = channel.unary_unary(
            ECHO_METHOD, request_serializer=None, response_deserializer=None
        )
        stream_echo = channel.stream_stream(
            ECHO_STREAM_METHOD, request_serializer=None, response_deserializer=None
        )(None, timeout=3600)
        cleanup.callback(stream_echo.cancel)

        async def echo_on_stream() -> None:
            await stream_echo.write(b"x")
            await stream_echo.read()

        for state in (local, bridged):
            loop.run_until_complete(
                state.register_variable(
                    "temperature", "float", 0.7, constraints={"min": 0, "max": 2}
                )
            )
        local_value, bridged_value = alternating(), alternating()
        peers = (REDIS_GET,) if redis_server is not None else ()
        ops = [
            _op(loop, NOOP, "an awaited no-op coroutine", "baseline", "get", _noop, None),
            _op(
                loop, ECHO, "bare grpc.aio unary echo", "baseline", "get", lambda: echo(b"x"), None
            ),
            _op(
                loop,
                STREAM_ECHO,
                "bare grpc.aio stream echo (one open stream)",
                "baseline",
                "get",
                echo_on_stream,
                ECHO,
            ),
            _op(
                loop,
                "aio.local.get",
                "AsyncLocalState get_variable",
                "local",
                "get",
                lambda: local.get_variable("temperature"),
                NOOP,
            ),
            _op(
                loop,
                "aio.local.set",
                "AsyncLocalState set_variable",
                "local",
                "set",
                lambda: local.set_variable("temperature", local_value()),
                NOOP,
            ),
            _op(
                loop,
                "aio.bridged.get",
                "AsyncBridgedState get_variable (the Calls stream)",
                "bridged",
                "get",
                lambda: bridged.get_variable("temperature"),
                ECHO,
                peers,
            ),
            _op(
                loop,
                "aio.bridged.set",
                "AsyncBridgedState set_variable (the Calls stream)",
                "bridged",
                "set",
                lambda: bridged.set_variable("temperature", bridged_value()),
                ECHO,
            ),
            _op(
                loop,
                "aio.bridged.uncoalesced.get",
                "AsyncBridgedState get_variable (coalesce=False)",
                "bridged",
                "get",
                lambda: single.get_variable("temperature"),
                "aio.bridged.get",
            ),
            Op(
                DICT,
                "dict lookup (d.get)",
                "baseline",
                "get",
                lambda: plain.get("temperature"),
                2000,
            ),
            _op(
                loop,
                "aio.cache.get",
                "AsyncBridgedState(cache=True) get_variable (2,000 awaits a sample)",
                "bridged",
                "cached.get",
                lambda: cached.get_variable("temperature"),
                DICT,
                calls=2000,
            ),
            _op(
                loop,
                "aio.bridged.unary.get",
                "AsyncBridgedState get_variable (stream=False: unary)",
                "bridged",
                "get",
                lambda: unary.get_variable("temperature"),
                ECHO,
            ),
        ]
        if redis_server is not None:
            client = loop.run_until_complete(_redis(redis_server.port))
            cleanup.callback(lambda: loop.run_until_complete(client.aclose()))
            loop.run_until_complete(client.set("bench:aio", b"0.7"))
            ops.append(
                _op(
                    loop,
                    REDIS_GET,
                    "redis.asyncio GET",
                    "redis",
                    "get",
                    lambda: client.get("bench:aio"),
                    ECHO,
                )
            )
            redis_state = loop.run_until_complete(
                AsyncRedisState.init(url=f"redis://127.0.0.1:{redis_server.port}/0", timeout=30)
            )
            cleanup.callback(lambda: loop.run_until_complete(redis_state.aclose()))
            loop.run_until_complete(redis_state.register_variable("temperature", "float", 0.7))
            ops.append(
                _op(
                    loop,
                    "aio.redis_state.get",
                    "AsyncRedisState get_variable",
                    "redis",
                    "get",
                    lambda: redis_state.get_variable("temperature"),
                    REDIS_GET,
                )
            )
        sample_ops(run, SUITE, "aio", ops, samples)
        if not cached.cached:
            raise RuntimeError("the cached handle stopped serving from its copy while sampled")
