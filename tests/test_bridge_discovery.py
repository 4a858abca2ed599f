"""Discovery: reflection v1 and v1alpha, and health (Check, Watch, List) on a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from dspex_actors.bridge import SessionStoreServer, serve
from dspex_actors.bridge.server import discovery
from dspex_actors.v1 import session_store_pb2 as pb

SESSION_STORE = "dspex_actors.v1.SessionStore"
HEALTH = "grpc.health.v1.Health"
V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def server() -> Iterator[SessionStoreServer]:
    with serve() as running:
        yield running


@pytest.fixture
def channel(server: SessionStoreServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as open_channel:
        yield open_channel


def reflect(
    channel: grpc.Channel,
    service: str,
    request: reflection_pb2.ServerReflectionRequest,
    metadata: tuple[tuple[str, str], ...] = (),
) -> reflection_pb2.ServerReflectionResponse:
    """One request on ``service``'s stream. v1 and v1alpha share every field number
    (pinned below), so v1alpha's messages are byte for byte what a v1 client sends."""
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    [response] = list(call(iter([request]), timeout=5, metadata=metadata))
    return response


def described_file(
    channel: grpc.Channel, service: str, symbol: str
) -> descriptor_pb2.FileDescriptorProto:
    """The file that defines ``symbol`` (the first file of the response: its own)."""
    response = reflect(
        channel, service, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
    )
    assert response.WhichOneof("message_response") == "file_descriptor_response"
    first = response.file_descriptor_response.file_descriptor_proto[0]
    return descriptor_pb2.FileDescriptorProto.FromString(first)


# -- reflection ----------------------------------------------------------------------------


@pytest.mark.parametrize("service", [V1, V1ALPHA])
def test_reflection_lists_every_service(channel: grpc.Channel, service: str) -> None:
    response = reflect(channel, service, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {entry.name for entry in response.list_services_response.service}
    assert names == {SESSION_STORE, HEALTH, V1, V1ALPHA}


@pytest.mark.parametrize("service", [V1, V1ALPHA])
def test_reflection_describes_the_session_store(channel: grpc.Channel, service: str) -> None:
    file = described_file(channel, service, SESSION_STORE)
    assert (file.name, file.package) == ("dspex_actors/v1/session_store.proto", "dspex_actors.v1")
    [described] = [s for s in file.service if s.name == "SessionStore"]
    expected = pb.DESCRIPTOR.services_by_name["SessionStore"].methods
    assert [m.name for m in described.method] == [m.name for m in expected]


@pytest.mark.parametrize("service", [V1, V1ALPHA])
def test_reflection_describes_both_reflection_versions(
    channel: grpc.Channel, service: str
) -> None:
    v1 = described_file(channel, service, V1)
    assert v1.package == "grpc.reflection.v1"
    [method] = v1.service[0].method
    assert (method.input_type, method.output_type) == (
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )
    referenced = {f.type_name for m in v1.message_type for f in m.field if f.type_name}
    assert referenced and all(name.startswith(".grpc.reflection.v1.") for name in referenced)
    assert described_file(channel, service, V1ALPHA).package == "grpc.reflection.v1alpha"


def test_reflection_v1_has_upstreams_field_numbers(channel: grpc.Channel) -> None:
    # grpc/reflection/v1/reflection.proto (grpc-proto), the request and response.
    upstream = {
        "ServerReflectionRequest": {
            "host": 1,
            "file_by_filename": 3,
            "file_containing_symbol": 4,
            "file_containing_extension": 5,
            "all_extension_numbers_of_type": 6,
            "list_services": 7,
        },
        "ServerReflectionResponse": {
            "valid_host": 1,
            "original_request": 2,
            "file_descriptor_response": 4,
            "all_extension_numbers_response": 5,
            "list_services_response": 6,
            "error_response": 7,
        },
    }
    v1 = described_file(channel, V1, V1)
    numbers = {m.name: {f.name: f.number for f in m.field} for m in v1.message_type}
    assert {name: numbers[name] for name in upstream} == upstream


@pytest.mark.parametrize("service", [V1, V1ALPHA])
def test_reflection_answers_not_found_for_an_unknown_symbol(
    channel: grpc.Channel, service: str
) -> None:
    response = reflect(
        channel,
        service,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Service"),
    )
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


# -- health ---------------------------------------------------------------------------------


def test_health_check_answers_per_service(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SESSION_STORE):
        assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == (
            SERVING
        )
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_list_answers_every_service(channel: grpc.Channel) -> None:
    response = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
    assert {name: status.status for name, status in response.statuses.items()} == {
        "": SERVING,
        SESSION_STORE: SERVING,
    }


def test_every_advertised_health_method_is_served(channel: grpc.Channel) -> None:
    advertised = health_pb2.DESCRIPTOR.services_by_name["Health"].methods
    assert {f"/{HEALTH}/{m.name}" for m in advertised} == discovery.HEALTH_METHODS
    stub = health_pb2_grpc.HealthStub(channel)
    assert {m.name for m in advertised} == {"Check", "Watch", "List"}
    stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    stub.List(health_pb2.HealthListRequest(), timeout=5)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=SESSION_STORE), timeout=5)
    try:
        assert next(watch).status == SERVING
    finally:
        watch.cancel()


def test_health_servicer_list_follows_set_and_shutdown() -> None:
    async def scenario() -> None:
        servicer = discovery.HealthServicer()
        context: Any = None  # List does not use it
        await servicer.set("a.Service", NOT_SERVING)
        await servicer.set("b.Service", SERVING)
        listed = await servicer.List(health_pb2.HealthListRequest(), context)
        assert {k: v.status for k, v in listed.statuses.items()} == {
            "": SERVING,
            "a.Service": NOT_SERVING,
            "b.Service": SERVING,
        }
        await servicer.shut_down()
        listed = await servicer.List(health_pb2.HealthListRequest(), context)
        assert {v.status for v in listed.statuses.values()} == {NOT_SERVING}
        await servicer.set("a.Service", SERVING)  # too late: it stays down
        listed = await servicer.List(health_pb2.HealthListRequest(), context)
        assert listed.statuses["a.Service"].status == NOT_SERVING

    asyncio.run(scenario())


# -- the token ------------------------------------------------------------------------------


def test_health_is_open_and_reflection_needs_the_token() -> None:
    with serve(token="s3cret") as server, grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
        listed = stub.List(health_pb2.HealthListRequest(), timeout=5)
        assert listed.statuses[SESSION_STORE].status == SERVING
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        for service in (V1, V1ALPHA):
            with pytest.raises(grpc.RpcError) as caught:
                reflect(channel, service, request)
            assert isinstance(caught.value, grpc.Call)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            token = (("authorization", "Bearer s3cret"),)
            answered = reflect(channel, service, request, metadata=token)
            assert SESSION_STORE in {s.name for s in answered.list_services_response.service}
