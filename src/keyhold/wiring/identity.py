"""The identity context: passwords, sessions, access tokens and their revocation,
service accounts, lockout and the signing-key rotation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from keyhold.adapters.crypto.access_tokens import AccessTokens
from keyhold.adapters.crypto.account_keys import JwkPublicKeys
from keyhold.adapters.crypto.argon2_hasher import Argon2Hasher, Argon2Parameters
from keyhold.adapters.crypto.client_assertions import JwtAssertions
from keyhold.adapters.crypto.jwk_sets import PyJwtJwkSets
from keyhold.adapters.crypto.key_ring import KeyRing
from keyhold.adapters.data import common_passwords
from keyhold.adapters.notices.log import LoggedAccountNotices
from keyhold.adapters.oauth.egress_transport import EgressTransport, Resolver, verifying_context
from keyhold.adapters.oauth.issuer_keys import PublishedIssuerKeys
from keyhold.adapters.persistence.identity.assertion_keys import SqlAccountKeyLookup
from keyhold.adapters.persistence.identity.assertion_replays import SqlAssertionReplays
from keyhold.adapters.persistence.identity.login_failures import SqlLoginFailureStore
from keyhold.adapters.persistence.identity.refresh_rotation import SqlRefreshTokenRotator
from keyhold.adapters.persistence.identity.service_accounts import SqlServiceAccountLookup
from keyhold.adapters.persistence.identity.session_state import SqlSessionState
from keyhold.adapters.persistence.notifications import PostgresRevocationNotices
from keyhold.application.identity.account_keys import AccountKeys
from keyhold.application.identity.api_resources import ApiResources
from keyhold.application.identity.client_assertions import ClientAssertions
from keyhold.application.identity.client_authentication import ClientAuthentication
from keyhold.application.identity.introspection import TokenIntrospection
from keyhold.application.identity.lockout import LoginLockout
from keyhold.application.identity.passwords import Passwords
from keyhold.application.identity.revocations import NO_REPLICAS, Revocations
from keyhold.application.identity.service_accounts import ServiceAccounts
from keyhold.application.identity.sessions import SessionLifetimes, Sessions
from keyhold.application.identity.signing_keys import (
    PublishedKeys,
    SigningKeyRotation,
    SigningKeys,
)
from keyhold.application.identity.token_exchange import TokenExchange
from keyhold.application.identity.token_revocation import TokenRevocation
from keyhold.application.identity.trusted_issuers import TrustedIssuers
from keyhold.application.identity.users import Users
from keyhold.application.identity.verification import EmailVerification
from keyhold.application.identity.workload_tokens import WorkloadTokens
from keyhold.domain.identity.client_assertions import AssertionRules
from keyhold.domain.identity.lockout import LockoutPolicy
from keyhold.domain.identity.passwords import PasswordPolicy
from keyhold.domain.identity.sessions import RetryGrace
from keyhold.domain.identity.workload_identity import WorkloadTokenRules
from keyhold.domain.principal import Principal
from keyhold.settings import Settings
from keyhold.wiring.audit import Audit
from keyhold.wiring.platform import Platform


@dataclass(frozen=True, slots=True)
class Identity:
    """The use cases IdentityService serves, and what they are built on."""

    users: Users
    sessions: Sessions
    passwords: Passwords
    verification: EmailVerification
    signing_keys: SigningKeys
    published_keys: PublishedKeys
    rotation: SigningKeyRotation
    key_ring: KeyRing
    service_accounts: ServiceAccounts
    api_resources: ApiResources
    assertion_replays: SqlAssertionReplays  # swept of expired entries by the server
    account_keys: AccountKeys
    trusted_issuers: TrustedIssuers
    issuer_keys: PublishedIssuerKeys  # closed by the server
    token_exchange: TokenExchange
    token_revocation: TokenRevocation
    introspection: TokenIntrospection
    access_tokens: AccessTokens
    revocations: Revocations
    lockout: LoginLockout
    hasher: Argon2Hasher


def hasher_for(settings: Settings) -> Argon2Hasher:
    return Argon2Hasher(
        Argon2Parameters(
            settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism
        ),
        workers=settings.password_hash_workers,
    )


def lockout_policy(settings: Settings) -> LockoutPolicy:
    return LockoutPolicy(
        threshold=settings.lockout_threshold,
        peer_threshold=settings.lockout_peer_threshold,
        account_threshold=settings.lockout_account_threshold,
        account_interval=timedelta(seconds=settings.lockout_account_interval_seconds),
        base_cooldown=timedelta(seconds=settings.lockout_base_seconds),
        max_cooldown=timedelta(seconds=settings.lockout_max_seconds),
    )


def revocations_for(platform: Platform, accounts: SqlServiceAccountLookup) -> Revocations:
    """Access tokens stay valid until they expire unless their session or service
    account is gone; other replicas hear of revocations through PostgreSQL."""
    database = platform.database
    session_state = SqlSessionState(database, platform.clock.now)

    async def session_is_live(principal: Principal) -> bool:
        user_id = principal.subject.removeprefix("users/")
        return await session_state.is_live(principal.session_id or "", user_id)

    async def account_is_live(principal: Principal) -> bool:
        return await accounts.exists(principal.subject.removeprefix("service-accounts/"))

    return Revocations(
        session_is_live,
        account_is_live,
        PostgresRevocationNotices(database) if database.is_postgres else NO_REPLICAS,
        ttl_seconds=platform.settings.session_cache_seconds,
    )


def issuer_keys_for(settings: Settings, resolver: Resolver) -> PublishedIssuerKeys:
    """Trusted issuers' keys, their JWKS URLs reached only through the egress policy."""
    egress = settings.egress_policy
    transport = EgressTransport(
        egress, resolver=resolver, ssl_context=verifying_context(settings.egress_ca_file)
    )
    return PublishedIssuerKeys(
        transport, egress, PyJwtJwkSets(), deadline_seconds=settings.provider_timeout_seconds
    )


def client_authentication_for(
    platform: Platform, accounts: SqlServiceAccountLookup, issuer_keys: PublishedIssuerKeys
) -> ClientAuthentication:
    settings, clock, unit_of_work = platform.settings, platform.clock, platform.unit_of_work
    checks = JwtAssertions()
    return ClientAuthentication(
        accounts,
        ClientAssertions(
            SqlAccountKeyLookup(platform.database),
            checks,
            AssertionRules(
                audience=settings.issuer,
                max_lifetime_seconds=settings.client_assertion_max_seconds,
                leeway_seconds=settings.token_leeway_seconds,
            ),
            clock,
        ),
        WorkloadTokens(
            unit_of_work,
            checks,
            issuer_keys,
            WorkloadTokenRules(
                max_lifetime_seconds=settings.workload_token_max_seconds,
                leeway_seconds=settings.token_leeway_seconds,
            ),
            clock,
        ),
    )


def wire_identity(platform: Platform, audit: Audit, egress_resolver: Resolver) -> Identity:
    settings, clock, unit_of_work = platform.settings, platform.clock, platform.unit_of_work
    recorder = audit.recorder
    accounts = SqlServiceAccountLookup(platform.database)
    revocations = revocations_for(platform, accounts)
    access_tokens = AccessTokens(
        platform.key_ring,
        revocations=revocations,
        issuer=settings.issuer,
        audience=settings.audience,
        lifetime_seconds=settings.access_token_lifetime_seconds,
        leeway_seconds=settings.token_leeway_seconds,
        clock=clock,
    )
    hasher = hasher_for(settings)
    replays = SqlAssertionReplays(platform.database)
    issuer_keys = issuer_keys_for(settings, egress_resolver)
    password_policy = PasswordPolicy(common_passwords())
    lockout = LoginLockout(
        SqlLoginFailureStore(platform.database),
        lockout_policy(settings),
        clock,
        platform.telemetry,
    )
    sessions = Sessions(
        unit_of_work,
        hasher,
        access_tokens,
        lockout,
        recorder,
        revocations,
        clock,
        SessionLifetimes(
            absolute=timedelta(seconds=settings.refresh_token_lifetime_seconds),
            idle=timedelta(seconds=settings.session_idle_timeout_seconds),
        ),
        SqlRefreshTokenRotator(
            platform.database,
            RetryGrace(
                timedelta(seconds=settings.refresh_reuse_grace_seconds),
                settings.refresh_reuse_grace_retries,
            ),
        ),
        platform.telemetry,
    )
    return Identity(
        users=Users(
            unit_of_work,
            hasher,
            password_policy,
            recorder,
            revocations,
            clock,
            LoggedAccountNotices(),
            self_sign_up=settings.self_signup,
        ),
        sessions=sessions,
        passwords=Passwords(
            unit_of_work,
            hasher,
            password_policy,
            recorder,
            revocations,
            clock,
            timedelta(seconds=settings.password_reset_token_lifetime_seconds),
            lockout,
        ),
        verification=EmailVerification(
            unit_of_work,
            recorder,
            clock,
            timedelta(seconds=settings.email_verification_token_lifetime_seconds),
        ),
        signing_keys=platform.signing_keys,
        published_keys=PublishedKeys(platform.signing_keys, platform.key_ring),
        rotation=SigningKeyRotation(
            platform.signing_keys, recorder, platform.key_ring.reload, revocations.notices
        ),
        key_ring=platform.key_ring,
        service_accounts=ServiceAccounts(
            unit_of_work,
            client_authentication_for(platform, accounts, issuer_keys),
            access_tokens,
            recorder,
            revocations,
            clock,
            settings.audience,
            platform.telemetry,
        ),
        api_resources=ApiResources(
            unit_of_work, recorder, revocations, clock, audience=settings.audience
        ),
        assertion_replays=replays,
        account_keys=AccountKeys(unit_of_work, JwkPublicKeys(), recorder, clock),
        trusted_issuers=TrustedIssuers(
            unit_of_work, PyJwtJwkSets(), settings.egress_policy, recorder, clock
        ),
        issuer_keys=issuer_keys,
        token_exchange=TokenExchange(
            unit_of_work,
            access_tokens,
            access_tokens,
            recorder,
            audience=settings.audience,
            max_depth=settings.token_exchange_max_depth,
            telemetry=platform.telemetry,
        ),
        token_revocation=TokenRevocation(unit_of_work, access_tokens, recorder, revocations, clock),
        introspection=TokenIntrospection(
            access_tokens, recorder, unit_of_work, audience=settings.audience
        ),
        access_tokens=access_tokens,
        revocations=revocations,
        lockout=lockout,
        hasher=hasher,
    )
