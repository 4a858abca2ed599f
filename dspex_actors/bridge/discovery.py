"""The standard services a SessionStore serves beside its own: health and reflection.

Health (``grpc.health.v1.Health``): grpcio-health-checking 1.85's servicer answers
``Check`` and ``Watch`` but leaves ``List``, which the service definition
advertises, UNIMPLEMENTED; :class:`HealthServicer` adds it.

Reflection: grpcio-reflection 1.85 serves only ``grpc.reflection.v1alpha``, while
current tools (grpcurl, Postman, grpc-node's reflection) ask for
``grpc.reflection.v1`` first. v1 is the same protocol under a new package, field
for field, so :func:`enable_reflection` answers both names with one servicer: the
v1alpha messages decode and encode the v1 method's bytes unchanged, and a private
descriptor pool holds v1's descriptors (v1alpha's, renamed) so that reflection
describes itself under both names without touching the process-wide pool.

Both are for a sync ``grpc.Server``; a ``grpc.aio`` server would take the packages'
``aio`` servicers instead (``health.aio.HealthServicer``,
``reflection.aio.ReflectionServicer``), with List added the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

__all__ = [
    "HEALTH_METHODS",
    "REFLECTION_SERVICES",
    "HealthServicer",
    "enable_reflection",
]

_HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
HEALTH_METHODS: frozenset[str] = frozenset(
    f"/{_HEALTH_SERVICE.full_name}/{method.name}" for method in _HEALTH_SERVICE.methods
)
"""Every health method path (Check, Watch, List): all implemented, all token-exempt."""

_V1ALPHA = "grpc.reflection.v1alpha"
_V1 = "grpc.reflection.v1"
REFLECTION_SERVICES: tuple[str, str] = (f"{_V1}.ServerReflection", f"{_V1ALPHA}.ServerReflection")
"""The reflection services :func:`enable_reflection` registers (v1, then v1alpha)."""


class HealthServicer(health.HealthServicer):
    """grpcio-health-checking's servicer, plus ``List``: every service's status."""

    def List(  # noqa: N802 - the proto's RPC name
        self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthListResponse:
        """A snapshot of every status ``set`` so far, the overall ("") one included.

        Reads the base class's own table under its lock (the base keeps no public
        view of it; tests/test_bridge_discovery.py pins this against upgrades).
        """
        with self._lock:
            statuses = dict(self._server_status)
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in statuses.items()
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


def enable_reflection(server: grpc.Server, service_names: Iterable[str]) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both.

    Every name must be a service in the default descriptor pool (its generated
    module imported), else ``KeyError``.
    """
    names = (*service_names, *REFLECTION_SERVICES)
    servicer: Any = reflection.ReflectionServicer(names, pool=_reflection_pool(service_names))
    for service in REFLECTION_SERVICES:
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )
