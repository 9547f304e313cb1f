"""Every RPC declares its policy in the proto, and a method without one stops start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from keyhold.api.policy import PolicyError, load_policies
from keyhold.policy.v1 import policy_pb2
from keyhold.server import build_server
from keyhold.wiring.grpc_api import SERVICES
from tests.support.servers import settings_for

API_RPCS = {
    "IdentityService": 25,
    "AuditService": 5,
    "ProviderService": 11,
    "ApiResourceService": 19,
}


def test_every_rpc_of_the_four_services_declares_an_auth_policy() -> None:
    assert {s.name: len(s.methods) for s in SERVICES} == API_RPCS
    for service in SERVICES:
        for method in service.methods:
            assert method.GetOptions().HasExtension(policy_pb2.auth), method.full_name
    assert len(load_policies(SERVICES)) == sum(API_RPCS.values())


def test_public_methods_are_rate_limited() -> None:
    for policy in load_policies(SERVICES).values():
        if policy.public:
            assert policy.rate_limits, f"{policy.full_method} is public and unthrottled"


def test_policies_match_the_api_table() -> None:
    policies = load_policies(SERVICES)

    def policy(name: str):  # type: ignore[no-untyped-def]
        return next(p for p in policies.values() if p.full_method.endswith("/" + name))

    assert policy("CreateSession").public
    assert {r.text for r in policy("CreateSession").rate_limits} == {"30/minute"}
    assert policy("ListUsers").roles == {"admin"}
    assert policy("IntrospectToken").scopes == {"identity.introspect"}
    assert policy("GetConnectionCredential").scopes == {"provider.credentials.read"}
    assert policy("UpdateUser").owner_field == ("user", "name")
    assert policy("ListSessions").owner_field == ("parent",)
    assert policy("StreamAuditEvents").server_streaming
    who = policy("WhoAmI")
    assert not who.public
    assert not who.principal_types
    assert not who.roles
    assert not who.scopes


def test_limits_by_peer_are_counted_before_limits_by_a_value_the_caller_sends() -> None:
    """A peer over its limit is refused before any key of its own making (a client_id,
    an email) is counted, so it cannot fill the limiter's memory with them."""
    for policy in load_policies(SERVICES).values():
        keys = [limit.key for limit in policy.rate_limits]
        peer = policy_pb2.RATE_LIMIT_KEY_PEER
        assert keys == sorted(keys, key=lambda key: key != peer), policy.full_method
    token = next(
        p for p in load_policies(SERVICES).values() if p.full_method.endswith("/CreateServiceToken")
    )
    assert [limit.text for limit in token.rate_limits] == ["600/minute", "120/minute"]


def _service(  # type: ignore[no-untyped-def]
    options: str | policy_pb2.AuthPolicy | None, pool: descriptor_pool.DescriptorPool, name: str
):
    file = descriptor_pb2.FileDescriptorProto(name=f"test/{name}.proto", package=f"test.{name}")
    file.dependency.append("keyhold/policy/v1/policy.proto")
    file.message_type.add(name="PingRequest").field.add(
        name="name", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    )
    file.message_type.add(name="PingResponse")
    method = file.service.add(name="PingService").method.add(
        name="Ping",
        input_type=f".test.{name}.PingRequest",
        output_type=f".test.{name}.PingResponse",
    )
    if options is not None:
        method.options.Extensions[policy_pb2.auth].CopyFrom(
            policy_pb2.AuthPolicy(owner_field=options) if isinstance(options, str) else options
        )
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(file.SerializeToString()))
    return pool.FindServiceByName(f"test.{name}.PingService")


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for source in (descriptor_pb2.DESCRIPTOR, policy_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        source.CopyToProto(proto)
        pool.Add(proto)
    return pool


def test_a_method_without_auth_policy_is_refused_with_a_clear_message() -> None:
    service = _service(None, _pool(), "bare")
    with pytest.raises(PolicyError, match=r"/test.bare.PingService/Ping declares no .*auth"):
        load_policies([service])


def test_an_owner_field_that_does_not_exist_is_refused() -> None:
    service = _service("nope", _pool(), "owner")
    with pytest.raises(PolicyError, match="request has no field 'nope'"):
        load_policies([service])


def test_require_mtls_is_read_from_the_options_and_allowed_on_public_methods() -> None:
    pool = _pool()
    guarded = _service(policy_pb2.AuthPolicy(public=True, require_mtls=True), pool, "mtls")
    plain = _service(policy_pb2.AuthPolicy(public=True), pool, "plain")
    assert load_policies([guarded])["/test.mtls.PingService/Ping"].require_mtls
    assert not load_policies([plain])["/test.plain.PingService/Ping"].require_mtls


async def test_the_server_refuses_to_start_when_a_method_lacks_a_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keyhold.wiring.grpc_api

    bare = _service(None, _pool(), "start")
    monkeypatch.setattr(keyhold.wiring.grpc_api, "SERVICES", (*SERVICES, bare))
    with pytest.raises(PolicyError, match="declares no"):
        await build_server(settings_for(tmp_path))
