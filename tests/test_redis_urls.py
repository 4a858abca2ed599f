"""Redis URLs: the one-Redis, Sentinel and Cluster forms, read the same way, and a
malformed one refused in the same words by every place that takes one (RedisState,
a Redis store, ``serve --store``, the Supervisor), never showing its password.

No Redis is needed: each of these is refused before anything is sent.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from bridge_support import python_env

from dspex_actors.stores import open_store
from dspex_actors.supervision import Supervisor
from dspex_actors.urls import REDIS_URLS, RedisTarget, is_redis, redacted, redis_target

pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[dev]')")


@pytest.mark.parametrize(
    ("url", "target"),
    [
        (
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/2",
            RedisTarget(
                "sentinel",
                "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/2",
                (("127.0.0.1", 26379), ("127.0.0.1", 26380)),
                "mymaster",
                2,
            ),
        ),
        (
            "redis+sentinel://u:p%40ss@[::1],h:7/svc?wait=1&sentinel_password=s",
            RedisTarget(
                "sentinel",
                "redis+sentinel://u:p%40ss@[::1],h:7/svc?wait=1&sentinel_password=s",
                (("::1", 26379), ("h", 7)),
                "svc",
                0,
                "u",
                "p@ss",
                "s",
                1,
            ),
        ),
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2?wait=1&wait_timeout=250",
            RedisTarget(
                "cluster",
                "redis+cluster://10.0.0.1:7000,10.0.0.2?wait=1&wait_timeout=250",
                (("10.0.0.1", 7000), ("10.0.0.2", 6379)),
                wait_replicas=1,
                wait_timeout_ms=250,
            ),
        ),
        (
            "redis+cluster://h:7000/",
            RedisTarget("cluster", "redis+cluster://h:7000/", (("h", 7000),)),
        ),
        # One Redis: our options are taken out, redis-py's own left as written.
        (
            "redis://:s%20x@h:6379/1?socket_timeout=2&wait=1",
            RedisTarget("single", "redis://:s%20x@h:6379/1?socket_timeout=2", wait_replicas=1),
        ),
        ("unix:///tmp/r.sock?db=1", RedisTarget("single", "unix:///tmp/r.sock?db=1")),
    ],
)
def test_each_form_names_its_nodes_service_and_wait(url: str, target: RedisTarget) -> None:
    assert is_redis(url)
    assert redis_target(url) == target


BAD = [
    ("redis+sentinel://:secret@h:26379", "names its service"),
    ("redis+sentinel://:secret@h:26379/svc/zero", "database must be a whole number"),
    ("redis+sentinel://:secret@h:26379/svc/0/extra", "names its service"),
    ("redis+cluster://:secret@h:7000/3", "database 0 only"),
    ("redis+cluster://:secret@h:port", "a node is HOST:PORT, got 'h:port'"),
    ("redis+cluster://:secret@h:7000,,h:7001", "a node is HOST:PORT, got ''"),
    ("redis+cluster://:secret@h:70000", "a node is HOST:PORT"),
    ("redis+cluster://:secret@h:7000?db=1", "unknown option 'db'"),
    ("redis+cluster://:secret@h:7000?sentinel_password=x", "unknown option 'sentinel_password'"),
    ("redis+sentinel://:secret@h/svc?wait=many", "wait must be a whole number"),
    ("redis://:secret@h:6379/0?wait_timeout=0", "wait_timeout is in milliseconds"),
]


@pytest.mark.parametrize(("url", "says"), BAD)
def test_a_malformed_url_is_refused_in_the_same_words_everywhere(url: str, says: str) -> None:
    from dspex_actors.redis import RedisState

    messages = []
    for refuse in (
        lambda: redis_target(url),
        lambda: RedisState.init(url=url),
        lambda: open_store(url),
        lambda: Supervisor(store=url),
    ):
        with pytest.raises(ValueError) as refused:
            refuse()
        messages.append(str(refused.value))
    assert len(set(messages)) == 1, messages
    message = messages[0]
    assert message.startswith(f"Redis URL {redacted(url)!r}: ") and says in message
    assert message.endswith(REDIS_URLS) and "secret" not in message


def test_serve_refuses_a_malformed_cluster_url_in_those_words() -> None:
    url, says = BAD[3]
    done = subprocess.run(
        [sys.executable, "-m", "dspex_actors", "serve", "--listen", "127.0.0.1:0", "--store", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=python_env(),
        check=False,
    )
    assert done.returncode != 0
    assert says in done.stderr and "secret" not in done.stderr


def test_a_url_of_each_form_shows_no_password() -> None:
    assert (
        redacted("redis+sentinel://u:pw@h:1,h:2/svc?sentinel_password=pw2&wait=1")
        == "redis+sentinel://u:***@h:1,h:2/svc?sentinel_password=***&wait=1"
    )
    assert redacted("redis+cluster://:pw@h:1,h:2") == "redis+cluster://:***@h:1,h:2"


def test_a_wait_that_would_outlast_its_call_is_refused() -> None:
    from dspex_actors.redis import RedisState

    with pytest.raises(ValueError, match=r"not below the call timeout of 2\.0s"):
        RedisState.init(url="redis://127.0.0.1:1/0?wait=1&wait_timeout=2000", timeout=2.0)
