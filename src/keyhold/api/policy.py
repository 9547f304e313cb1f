"""Per-method policies, read once from the custom options in the service descriptors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from limits import RateLimitItem, parse

from keyhold.domain.principal import PrincipalType
from keyhold.policy.v1 import policy_pb2

_PRINCIPAL_TYPES = {
    policy_pb2.PRINCIPAL_TYPE_USER: PrincipalType.USER,
    policy_pb2.PRINCIPAL_TYPE_SERVICE: PrincipalType.SERVICE,
}


class PolicyError(RuntimeError):
    """A service's descriptors declare no policy, or an invalid one, for some method."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    key: int  # a policy_pb2.RateLimitKey value
    field: str
    item: RateLimitItem
    text: str


@dataclass(frozen=True, slots=True)
class MethodPolicy:
    """What the interceptor enforces for one method, resolved from its options."""

    full_method: str  # "/package.Service/Method", as gRPC names it on the wire
    public: bool
    principal_types: frozenset[PrincipalType]
    roles: frozenset[str]
    scopes: frozenset[str]
    owner_field: tuple[str, ...]  # path into the request message; empty when unused
    rate_limits: tuple[RateLimit, ...]
    server_streaming: bool
    require_mtls: bool
    request_type: Descriptor  # the request message, whose fields' bounds are checked


def _rate_limit(method: str, option: policy_pb2.RateLimitPolicy) -> RateLimit:
    if option.key == policy_pb2.RATE_LIMIT_KEY_UNSPECIFIED:
        raise PolicyError(f"{method}: rate_limit needs a key")
    if (option.key == policy_pb2.RATE_LIMIT_KEY_FIELD) != bool(option.field):
        raise PolicyError(f"{method}: rate_limit `field` goes with key FIELD, and only with it")
    try:
        item = parse(option.limit)
    except ValueError as exc:
        raise PolicyError(f"{method}: rate_limit {option.limit!r} is not a limit") from exc
    return RateLimit(option.key, option.field, item, option.limit)


def _method_policy(service: ServiceDescriptor, method_name: str) -> MethodPolicy:
    method = service.methods_by_name[method_name]
    full_method = f"/{service.full_name}/{method.name}"
    options = method.GetOptions()
    if not options.HasExtension(policy_pb2.auth):
        raise PolicyError(
            f"{full_method} declares no (keyhold.policy.v1.auth) option; every method "
            "must say who may call it"
        )
    auth = options.Extensions[policy_pb2.auth]
    if auth.public and (auth.principal_types or auth.roles or auth.scopes or auth.owner_field):
        raise PolicyError(f"{full_method}: a public method cannot also require credentials")
    if policy_pb2.PRINCIPAL_TYPE_UNSPECIFIED in auth.principal_types:
        raise PolicyError(f"{full_method}: PRINCIPAL_TYPE_UNSPECIFIED is not a principal type")
    owner_path = tuple(auth.owner_field.split(".")) if auth.owner_field else ()
    if owner_path:
        _check_field_path(full_method, method.input_type, owner_path)
    declared = [_rate_limit(full_method, o) for o in options.Extensions[policy_pb2.rate_limit]]
    # Limits by peer are counted first: a peer over its limit then adds no key made of
    # the values it sends (a client_id, an email) to the limiter's memory.
    limits = tuple(sorted(declared, key=lambda limit: limit.key != policy_pb2.RATE_LIMIT_KEY_PEER))
    for limit in limits:
        if limit.field:
            _check_field_path(full_method, method.input_type, (limit.field,))
    return MethodPolicy(
        full_method=full_method,
        public=auth.public,
        principal_types=frozenset(_PRINCIPAL_TYPES[t] for t in auth.principal_types),
        roles=frozenset(auth.roles),
        scopes=frozenset(auth.scopes),
        owner_field=owner_path,
        rate_limits=limits,
        server_streaming=method.server_streaming,
        require_mtls=auth.require_mtls,
        request_type=method.input_type,
    )


def _check_field_path(full_method: str, message: object, path: tuple[str, ...]) -> None:
    descriptor = message
    for part in path:
        fields = getattr(descriptor, "fields_by_name", {})
        if part not in fields:
            raise PolicyError(f"{full_method}: request has no field {'.'.join(path)!r}")
        descriptor = fields[part].message_type


def load_policies(services: Iterable[ServiceDescriptor]) -> dict[str, MethodPolicy]:
    """Every method's policy, keyed by its wire name; raises PolicyError if any is missing."""
    policies: dict[str, MethodPolicy] = {}
    for service in services:
        for method in service.methods:
            policy = _method_policy(service, method.name)
            policies[policy.full_method] = policy
    return policies
