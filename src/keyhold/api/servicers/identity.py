"""keyhold.identity.v1.IdentityService."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from keyhold.adapters.crypto.key_ring import KeyRing
from keyhold.application.identity.signing_keys import SigningKeys
from keyhold.domain.call import current_call
from keyhold.domain.principal import PrincipalType
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc

_SUBJECT_TYPES = {
    PrincipalType.USER: pb.SUBJECT_TYPE_USER,
    PrincipalType.SERVICE: pb.SUBJECT_TYPE_SERVICE,
}


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, signing_keys: SigningKeys, key_ring: KeyRing) -> None:
        self._signing_keys = signing_keys
        self._key_ring = key_ring

    async def GetJwks(self, request: pb.GetJwksRequest, context: Any) -> pb.GetJwksResponse:
        keys = await self._signing_keys.verifiable()
        if self._key_ring.key_ids() != {key.key_id for key in keys}:
            self._key_ring.replace(keys)
        jwks = [key.public_jwk for key in keys]
        return pb.GetJwksResponse(
            keys=[
                pb.JsonWebKey(
                    key_id=jwk["kid"],
                    key_type=jwk["kty"],
                    curve=jwk["crv"],
                    x=jwk["x"],
                    y=jwk.get("y", ""),
                    algorithm=jwk["alg"],
                    use=jwk["use"],
                )
                for jwk in jwks
            ],
            jwks_json=json.dumps({"keys": jwks}, sort_keys=True),
        )

    async def WhoAmI(self, request: pb.WhoAmIRequest, context: Any) -> pb.WhoAmIResponse:
        principal = current_call().principal
        response = pb.WhoAmIResponse(
            subject=principal.subject,
            subject_type=_SUBJECT_TYPES.get(principal.type, pb.SUBJECT_TYPE_UNSPECIFIED),
            roles=sorted(principal.roles),
            scopes=sorted(principal.scopes),
            session=f"sessions/{principal.session_id}" if principal.session_id else "",
        )
        if principal.expires_at is not None:
            response.expire_time.CopyFrom(Timestamp(seconds=principal.expires_at))
        return response
