"""Keyhold's client library for other services.

- `ServiceAccountCredentials`: a service account's token, cached, renewed before it
  expires (one request however many calls are waiting), attached to calls as gRPC call
  credentials. The account proves itself by its client secret (`from_secret`), by a
  client assertion signed with its private key (`from_private_key`), or by a token of
  an issuer Keyhold trusts read from a file it re-reads when rotated
  (`from_token_file`); each for an audience of the caller's choice.
- `OnBehalfOf`: tokens to call another service on a user's behalf, exchanged for the
  user's token (ExchangeToken) and cached in a bounded LRU until shortly before expiry.
- `keyhold_channel`: a grpc.aio channel to Keyhold or to any service that accepts
  Keyhold tokens, with those credentials attached.
- `tls_channel_credentials`: TLS channel credentials (server CA, client certificate for
  mutual TLS) from PEM files, for `keyhold_channel`.
- `TokenVerifier`: verifies Keyhold access tokens locally against Keyhold's published
  keys (GetJwks), with the same rules as Keyhold itself.
- `RequireKeyholdToken`: a grpc.aio server interceptor for a downstream service that
  accepts only valid Keyhold tokens carrying the scopes it names.
"""

from keyhold.client.channels import keyhold_channel
from keyhold.client.credentials import ServiceAccountCredentials
from keyhold.client.interceptor import RequireKeyholdToken, current_principal
from keyhold.client.on_behalf_of import OnBehalfOf
from keyhold.client.tls import tls_channel_credentials
from keyhold.client.verifier import TokenVerifier

__all__ = [
    "OnBehalfOf",
    "RequireKeyholdToken",
    "ServiceAccountCredentials",
    "TokenVerifier",
    "current_principal",
    "keyhold_channel",
    "tls_channel_credentials",
]
