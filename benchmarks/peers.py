"""Clients of what users would pick instead of dspex_actors: Redis and etcd.

Each peer operation does the work of the dspex_actors operation it is set beside,
no less: values cross as msgpack (packed and unpacked in the timed call, as
``BridgedState`` does), and a versioned set is a real compare-and-set.

- Redis (redis-py, its default connection pool): ``GET`` of a key, ``SET``, and
  :data:`CAS_LUA` run with ``EVALSHA``: a variable is a hash holding value and
  version, the script checks the expected version and writes value and version+1
  atomically, as our ``set_variable(..., expected_version=v)`` does; and
  :data:`BATCH_LUA`, many such variables written (value and version+1 each) in one
  atomic step, as our ``update_variables`` does.
- etcd (its v3 gRPC API over grpcio, the transport BridgedState uses): ``Range``
  (linearizable, etcd's default), ``Put``, and a ``Txn`` that puts only if the key's
  ``mod_revision`` is the one last seen: etcd's compare-and-set. The messages come
  from ``etcd_kv.proto`` beside this file, compiled at run time (:func:`etcd_messages`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import msgpack

from benchmarks.affinity import launcher, own_cores
from benchmarks.servers import child_env
from benchmarks.suite import Op, alternating, versioned_set

__all__ = [
    "BATCH_LUA",
    "CAS_LUA",
    "EtcdPeer",
    "RedisAlone",
    "RedisPeer",
    "alone_op",
    "etcd_messages",
    "redis_ops",
]

CAS_LUA = """
-- KEYS[1]: a variable, a hash {value, version}; ARGV[1]: the expected version;
-- ARGV[2]: the new value. Writes value and version + 1, or fails on another version.
local version = redis.call('HGET', KEYS[1], 'version')
if version ~= ARGV[1] then
  return redis.error_reply('VERSION_CONFLICT ' .. KEYS[1] .. ' is at ' .. tostring(version))
end
local new = tonumber(version) + 1
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'version', new)
return new
"""

BATCH_LUA = """
-- KEYS: variables, hashes {value, version}; ARGV: their new values, in KEYS' order.
-- Writes every value and version + 1 in one atomic step, as a batch update does.
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 'value', ARGV[i])
  redis.call('HINCRBY', key, 'version', 1)
end
return #KEYS
"""

_PROTO = Path(__file__).resolve().parent / "etcd_kv.proto"
_MESSAGES: ModuleType | None = None


class RedisPeer:
    """redis-py against the run's redis-server."""

    def __init__(self, port: int) -> None:
        import redis  # type: ignore[import-not-found, unused-ignore]

        self.client: Any = redis.Redis(host="127.0.0.1", port=port)
        self._cas: Any = self.client.register_script(CAS_LUA)
        self._batch: Any = self.client.register_script(BATCH_LUA)

    def put(self, key: str, value: Any) -> None:
        """``SET``: a plain write, no version."""
        self.client.set(key, msgpack.packb(value))

    def get(self, key: str) -> Any:
        return msgpack.unpackb(self.client.get(key))

    def new_variable(self, key: str, value: Any) -> int:
        """Create a variable hash at version 0 for :meth:`cas`."""
        self.client.hset(key, mapping={"value": msgpack.packb(value), "version": 0})
        return 0

    def fill_variables(self, keys: list[str], value: Any) -> None:
        """Create many variable hashes at version 0, pipelined in chunks."""
        packed = msgpack.packb(value)
        for start in range(0, len(keys), 1000):
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys[start : start + 1000]:
                    pipe.hset(key, mapping={"value": packed, "version": 0})
                pipe.execute()

    def cas(self, key: str, expected_version: int, value: Any) -> int:
        """Write ``value`` if the variable is at ``expected_version``; the new version."""
        version: int = self._cas(keys=[key], args=[expected_version, msgpack.packb(value)])
        return version

    def write_many(self, keys: list[str], values: list[Any]) -> None:
        """Write each variable's value and version + 1, all in one script (:data:`BATCH_LUA`)."""
        self._batch(keys=keys, args=[msgpack.packb(value) for value in values])

    def import_session(self, key: str, records: dict[str, dict[str, Any]]) -> None:
        """A whole session as one hash of msgpack records, replaced in one transaction."""
        packed = {name: msgpack.packb(record) for name, record in records.items()}
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=packed)
            pipe.execute()

    def export_session(self, key: str) -> dict[str, Any]:
        return {
            name.decode(): msgpack.unpackb(packed)
            for name, packed in self.client.hgetall(key).items()
        }

    def flush(self) -> None:
        self.client.flushdb()

    def close(self) -> None:
        self.client.close()


GET_KEY = "bench:get"
"""The key the suites' redis-py ``GET`` reads (and ``SET`` writes)."""


def redis_ops(
    peer: RedisPeer, prefix: str, baseline: str | None, alone: str | None = None
) -> list[Op]:
    """``GET``, ``SET`` and the Lua compare-and-set as ops ``PREFIX.get``, ``.set`` and
    ``.cas``, judged against ``baseline``: the Redis peer a suite samples beside its own;
    its ``GET`` also set beside ``alone``, the same ``GET`` in a process of its own."""
    peer.put(GET_KEY, 0.7)
    peer.new_variable("bench:var", 0.7)
    value = alternating()
    return [
        Op(
            f"{prefix}.get",
            "redis-py GET",
            "redis",
            "get",
            lambda: peer.get(GET_KEY),
            baseline=baseline,
            peers=(alone,) if alone else (),
        ),
        Op(
            f"{prefix}.set",
            "redis-py SET",
            "redis",
            "put",
            lambda: peer.put(GET_KEY, value()),
            baseline=baseline,
        ),
        Op(
            f"{prefix}.cas",
            "redis-py Lua compare-and-set (EVALSHA)",
            "redis",
            "set",
            versioned_set(lambda v, n: peer.cas("bench:var", n, v), 0),
            baseline=baseline,
        ),
    ]


class RedisAlone:
    """redis-py's ``GET`` in a fresh process of its own (:mod:`benchmarks.alone`), on
    this process's cores: what a redis-py user measures, sampled a turn per request."""

    def __init__(self, port: int, key: str = GET_KEY) -> None:
        argv = [sys.executable, "-m", "benchmarks.alone", str(port), key]
        self.process = subprocess.Popen(
            launcher(argv, own_cores()),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        try:
            said = self._line()
            if said != "ready":
                raise RuntimeError(f"benchmarks.alone said {said!r}, not 'ready'")
        except BaseException:
            self.close()
            raise

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmarks.alone exited ({self.process.poll()})")
        return line.strip()

    def block(self, lead: int, count: int) -> list[float]:
        """``lead`` untimed ``GET``s there, then ``count`` timed: their ns (a Sampler)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"block {lead} {count}\n")
        self.process.stdin.flush()
        ns: list[float] = json.loads(self._line())
        return ns

    def close(self) -> None:
        try:
            self.process.communicate("quit\n", timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()

    def __enter__(self) -> RedisAlone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sampled_by_its_sampler() -> object:
    raise RuntimeError("this op samples its blocks itself (Op.sampler)")


def alone_op(alone: RedisAlone, id: str, beside: str) -> Op:
    """The cross-check's op: redis-py ``GET`` alone in its process, sampled in the
    suite's blocks, each right beside a block of the suite's own ``GET`` (``beside``),
    so that the two see the same moment of the machine (:mod:`benchmarks.alone`)."""
    return Op(
        id,
        "redis-py GET, alone in a fresh process",
        "redis",
        "get",
        _sampled_by_its_sampler,
        sampler=alone.block,
        beside=beside,
    )


def etcd_messages() -> ModuleType:
    """etcd's KV messages, compiled from ``etcd_kv.proto`` into a directory removed at once."""
    global _MESSAGES  # noqa: PLW0603 - compiled once per process
    if _MESSAGES is None:
        protoc = importlib.import_module("grpc_tools.protoc")
        with tempfile.TemporaryDirectory(prefix="dspex-bench-etcd-proto-") as out:
            argv = ["protoc", f"-I{_PROTO.parent}", f"--python_out={out}", str(_PROTO)]
            if protoc.main(argv) != 0:
                raise RuntimeError(f"protoc could not compile {_PROTO}")
            spec = importlib.util.spec_from_file_location(
                "etcd_kv_pb2", Path(out, "etcd_kv_pb2.py")
            )
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        _MESSAGES = module
    return _MESSAGES


class EtcdPeer:
    """etcd's KV service over a grpcio channel, as BridgedState talks to its server."""

    def __init__(self, address: str) -> None:
        self.pb = pb = etcd_messages()
        self.channel = grpc.insecure_channel(address)

        def method(name: str, request: Any, response: Any) -> grpc.UnaryUnaryMultiCallable:
            return self.channel.unary_unary(
                f"/etcdserverpb.KV/{name}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )

        self._range = method("Range", pb.RangeRequest, pb.RangeResponse)
        self._put = method("Put", pb.PutRequest, pb.PutResponse)
        self._txn = method("Txn", pb.TxnRequest, pb.TxnResponse)

    def get(self, key: bytes) -> Any:
        response = self._range(self.pb.RangeRequest(key=key), timeout=10)
        return msgpack.unpackb(response.kvs[0].value)

    def put(self, key: bytes, value: Any) -> int:
        """Write ``value``; the key's new ``mod_revision``."""
        response = self._put(self.pb.PutRequest(key=key, value=msgpack.packb(value)), timeout=10)
        revision: int = response.header.revision
        return revision

    def cas(self, key: bytes, mod_revision: int, value: Any) -> int:
        """Put ``value`` if ``key`` was last modified at ``mod_revision``; the new one."""
        pb = self.pb
        request = pb.TxnRequest(
            compare=[
                pb.Compare(
                    result=pb.Compare.EQUAL,
                    target=pb.Compare.MOD,
                    key=key,
                    mod_revision=mod_revision,
                )
            ],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=msgpack.packb(value)))],
        )
        response = self._txn(request, timeout=10)
        if not response.succeeded:
            raise RuntimeError(f"etcd compare-and-set of {key!r} at {mod_revision} failed")
        revision: int = response.header.revision
        return revision

    def close(self) -> None:
        self.channel.close()
