"""The egress policy's rules, without a network: which provider URLs pass the static check
and which resolved addresses pass the connect-time check."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyhold.domain.provider.egress import EgressPolicy, EgressRefused, is_public
from keyhold.settings import Settings

STRICT = EgressPolicy()
DEVELOPMENT = EgressPolicy(allow_loopback_http=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://bank.example.com/token",  # plain http
        "http://127.0.0.1:8080/token",  # plain http to loopback, without the setting
        "http://localhost/token",
        "ftp://bank.example.com/token",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://10.0.0.1/token",
        "https://172.16.5.4/token",
        "https://192.168.1.1/token",
        "https://100.64.0.1/token",  # shared (CGNAT)
        "https://100.100.100.200/token",  # a cloud's metadata, in the shared range
        "https://127.0.0.1/token",
        "https://127.0.0.1:22/",
        "https://0.0.0.0/token",
        "https://224.0.0.1/token",  # multicast
        "https://240.0.0.1/token",  # reserved
        "https://192.0.0.192/token",  # IETF protocol assignments (Python calls it global)
        "https://198.51.100.7/token",  # documentation
        "https://[::1]/token",
        "https://[::]/token",
        "https://[fe80::1]/token",  # link-local
        "https://[fd00:ec2::254]/token",  # unique-local; a cloud's metadata
        "https://[ff02::1]/token",  # multicast
        "https://[::ffff:169.254.169.254]/token",  # IPv4-mapped
        "https://[::ffff:10.0.0.1]/token",
        "https://[64:ff9b::a9fe:a9fe]/token",  # NAT64 of 169.254.169.254
        "https://[2002:a00:1::1]/token",  # 6to4 of 10.0.0.1
        "https://localhost/token",
        "https://bank.example.com:8443/token",  # a port other than 443
        "https://bank.example.com:22/token",
        "https://user:secret@bank.example.com/token",  # userinfo
        "https://user@bank.example.com/token",
        "https:///token",
        "https://bank\u200b.example.com/token",  # a name IDNA 2008 refuses (httpx too)
    ],
)
def test_the_static_check_refuses(url: str) -> None:
    with pytest.raises(EgressRefused):
        STRICT.check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://bank.example.com/token",
        "https://bank.example.com:443/token",
        "https://BANK.example.com./token",
        "https://93.184.216.34/token",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/token",
        "https://bücher.example/token",
    ],
)
def test_the_static_check_lets_public_https_through(url: str) -> None:
    assert STRICT.check_url(url).port == 443


def test_the_development_setting_allows_only_loopback_http() -> None:
    assert DEVELOPMENT.check_url("http://127.0.0.1:8080/token").port == 8080
    assert DEVELOPMENT.check_url("http://localhost:8080/token").host == "localhost"
    assert DEVELOPMENT.check_url("http://[::1]:8080/token").host == "::1"
    for url in (
        "http://bank.example.com/token",
        "http://10.0.0.1/token",
        "https://169.254.169.254/token",
        "https://bank.example.com:8443/token",
    ):
        with pytest.raises(EgressRefused):
            DEVELOPMENT.check_url(url)


def test_the_allowlist_names_networks_and_hosts() -> None:
    policy = EgressPolicy.from_entries(
        ["10.20.0.0/16", " idp.corp.example:8443", "[fd00::5]:9443", "sso.corp.example", ""],
        allow_loopback_http=False,
    )
    assert policy.check_url("https://10.20.3.4/token").host == "10.20.3.4"
    assert policy.check_url("https://idp.corp.example:8443/token").port == 8443
    assert policy.check_url("https://[fd00::5]:9443/token").port == 9443
    assert policy.check_url("https://sso.corp.example/token").port == 443
    for url in (
        "https://10.21.0.1/token",  # outside the network
        "https://10.20.3.4:8443/token",  # a network entry does not open other ports
        "https://sso.corp.example:8443/token",
    ):
        with pytest.raises(EgressRefused):
            policy.check_url(url)
    policy.check_address("bank.example.com", 443, ipaddress.ip_address("10.20.9.9"))
    policy.check_address("idp.corp.example", 8443, ipaddress.ip_address("127.0.0.1"))
    with pytest.raises(EgressRefused):
        policy.check_address("idp.corp.example", 443, ipaddress.ip_address("127.0.0.1"))


@pytest.mark.parametrize("entry", ["bank.example.com:notaport", "[fd00::5", "host:0", "a b"])
def test_a_malformed_allowlist_entry_is_refused_at_start_up(entry: str) -> None:
    with pytest.raises(ValueError, match="egress"):
        Settings(_env_file=None, egress_allow=f"10.0.0.0/8,{entry}")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.3.2.1",
        "10.1.2.3",
        "169.254.169.254",
        "100.64.1.1",
        "0.0.0.0",  # noqa: S104 - an address to refuse, not to bind
        "255.255.255.255",
        "233.252.0.1",
        "::1",
        "::",
        "fd00:ec2::254",
        "fe80::abcd",
        "::ffff:127.0.0.1",
        "::ffff:192.168.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "2001:db8::1",
    ],
)
def test_connect_time_refuses_addresses_that_are_not_public(address: str) -> None:
    parsed = ipaddress.ip_address(address)
    assert not is_public(parsed)
    with pytest.raises(EgressRefused):
        STRICT.check_address("bank.example.com", 443, parsed)


def test_connect_time_checks_the_port_again() -> None:
    public = ipaddress.ip_address("93.184.216.34")
    with pytest.raises(EgressRefused, match="port 22"):
        STRICT.check_address("bank.example.com", 22, public)
    with pytest.raises(EgressRefused, match="port 8443"):
        DEVELOPMENT.check_address("bank.example.com", 8443, public)
    named = EgressPolicy.from_entries(["bank.example.com:8443"], allow_loopback_http=False)
    named.check_address("bank.example.com", 8443, public)


def test_connect_time_allows_public_addresses_and_development_loopback() -> None:
    for address in ("93.184.216.34", "::ffff:93.184.216.34", "2606:2800:220:1::1"):
        STRICT.check_address("bank.example.com", 443, ipaddress.ip_address(address))
    loopback = ipaddress.ip_address("127.0.0.1")
    DEVELOPMENT.check_address("127.0.0.1", 8080, loopback)
    DEVELOPMENT.check_address("localhost", 8080, loopback)
    with pytest.raises(EgressRefused):  # a public name that answers loopback: rebinding
        DEVELOPMENT.check_address("bank.example.com", 443, loopback)


@given(st.text(max_size=80) | st.text(max_size=80).map(lambda tail: f"https://{tail}"))
def test_any_url_is_either_a_destination_or_refused(url: str) -> None:
    for policy in (STRICT, DEVELOPMENT):
        try:
            destination = policy.check_url(url)
        except EgressRefused:
            continue
        assert destination.scheme in {"http", "https"}
        assert destination.port == 443 or policy is DEVELOPMENT
