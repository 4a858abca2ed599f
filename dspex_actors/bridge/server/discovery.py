"""The standard services a SessionStore serves beside its own: health and reflection.

Health (``grpc.health.v1.Health``): :class:`HealthServicer` answers ``Check``,
``Watch`` and ``List`` (grpcio-health-checking 1.85 leaves ``List``, which the
service definition advertises, UNIMPLEMENTED, and its ``Watch`` streams stay open
through a server's whole shutdown grace). Ours keeps its own table of statuses,
and :meth:`HealthServicer.shut_down` reports NOT_SERVING and ends every watch, so a
stopping server is not held by its probes.

Reflection: grpcio-reflection 1.85 serves only ``grpc.reflection.v1alpha``, while
current tools (grpcurl, Postman, grpc-node's reflection) ask for
``grpc.reflection.v1`` first. v1 is the same protocol under a new package, field
for field, so :func:`enable_reflection` answers both names with one servicer: the
v1alpha messages decode and encode the v1 method's bytes unchanged, and a private
descriptor pool holds v1's descriptors (v1alpha's, renamed) so that reflection
describes itself under both names without touching the process-wide pool.

Both are for the server's ``grpc.aio`` event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

__all__ = [
    "HEALTH_METHODS",
    "HEALTH_SERVICE",
    "REFLECTION_SERVICES",
    "HealthServicer",
    "enable_reflection",
]

_HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
HEALTH_SERVICE: str = _HEALTH_SERVICE.full_name
HEALTH_METHODS: frozenset[str] = frozenset(
    f"/{_HEALTH_SERVICE.full_name}/{method.name}" for method in _HEALTH_SERVICE.methods
)
"""Every health method path (Check, Watch, List): all implemented, all token-exempt."""

_V1ALPHA = "grpc.reflection.v1alpha"
_V1 = "grpc.reflection.v1"
REFLECTION_SERVICES: tuple[str, str] = (f"{_V1}.ServerReflection", f"{_V1ALPHA}.ServerReflection")
"""The reflection services :func:`enable_reflection` registers (v1, then v1alpha)."""

_Status = int  # health_pb2.HealthCheckResponse.ServingStatus, an enum's int value

MAX_WATCHES = 64
"""Health watches served at once (they need no token, so they are capped apart)."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):
    """The standard health service on the server's event loop (see the module docstring).

    Every method runs on that loop; :meth:`set` and :meth:`shut_down` too.
    """

    def __init__(self, max_watches: int = MAX_WATCHES) -> None:
        self._statuses: dict[str, _Status] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._ended = False
        self._watches = 0
        self._max_watches = max_watches

    async def set(self, service: str, status: _Status) -> None:
        """Record a service's status ("" is the server's) and tell its watchers."""
        async with self._changed:
            if not self._ended:
                self._statuses[service] = status
                self._changed.notify_all()

    async def shut_down(self) -> None:
        """Every service NOT_SERVING from now on; every watch ends after saying so."""
        async with self._changed:
            self._statuses = dict.fromkeys(self._statuses, NOT_SERVING)
            self._ended = True
            self._changed.notify_all()

    async def Check(  # noqa: N802 - the proto's RPC name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(  # noqa: N802 - the proto's RPC name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        if self._watches >= self._max_watches:
            # Health needs no token: without a cap, anyone could hold every call slot.
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._max_watches} health watches are open, the limit",
            )
        self._watches += 1
        try:
            async for response in self._watch(request.service):
                yield response
        finally:
            self._watches -= 1

    async def _watch(self, service: str) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: list[_Status | None] = [None]  # what the watcher was last told

        def news() -> bool:
            return self._ended or self._statuses.get(service, SERVICE_UNKNOWN) != last[0]

        while True:
            async with self._changed:
                await self._changed.wait_for(news)
                status = self._statuses.get(service, SERVICE_UNKNOWN)
                ended = self._ended
            if status != last[0]:
                yield health_pb2.HealthCheckResponse(status=status)
                last[0] = status
            if ended:
                return

    async def List(  # noqa: N802 - the proto's RPC name
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        """A snapshot of every status set so far, the overall ("") one included."""
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._statuses.items()
            }
        )


def _file_proto(file: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


def _v1_reflection_file() -> descriptor_pb2.FileDescriptorProto:
    """reflection v1's descriptor: v1alpha's, with package and type references renamed."""
    proto = _file_proto(reflection_pb2.DESCRIPTOR)
    proto.name = "grpc/reflection/v1/reflection.proto"  # where upstream keeps v1
    proto.package = _V1
    proto.ClearField("options")  # v1alpha's language options (java_package, ...)
    old, new = f".{_V1ALPHA}.", f".{_V1}."
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    return proto


def _reflection_pool(service_names: Iterable[str]) -> descriptor_pool.DescriptorPool:
    """A pool holding the files defining ``service_names`` (with their imports) and v1's."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        pool.Add(_file_proto(file))
        added.add(file.name)

    for name in service_names:
        add(descriptor_pool.Default().FindServiceByName(name).file)
    add(reflection_pb2.DESCRIPTOR)
    pool.Add(_v1_reflection_file())
    return pool


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both.

    Every name must be a service in the default descriptor pool (its generated
    module imported), else ``KeyError``.
    """
    names = (*service_names, *REFLECTION_SERVICES)
    servicer: Any = reflection.aio.ReflectionServicer(  # type: ignore[attr-defined]
        names, pool=_reflection_pool(service_names)
    )
    for service in REFLECTION_SERVICES:
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )
