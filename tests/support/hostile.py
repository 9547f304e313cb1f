"""Hypothesis strategies for hostile requests, built from the message descriptors: any
request message of any RPC, bytes that are not a valid message of it, and bad
`authorization` metadata."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
EDGE_INTEGERS = (
    *(0, 1, -1, 49, 50, 51, 499, 500, 501),
    *(2**31 - 1, 2**31, 2**31 + 1, -(2**31), -(2**31) - 1, 2**32 - 1, 2**53),
    *(2**63 - 2, 2**63 - 1, -(2**63), 2**64 - 1),
    # Timestamp seconds: the last of 9999-12-31, and one past either end of 0001-9999.
    *(253_402_300_799, 253_402_300_800, -62_135_596_801),
    *(999_999_999, 1_000_000_000),  # nanos: the last valid, the first not
)
# Every script's decimal digits, which str.isdigit() takes and a database does not.
NON_ASCII_DIGITS = st.text(
    st.characters(categories=["Nd", "No"], exclude_characters="0123456789"),
    min_size=1,
    max_size=20,
)
REPEATED_ITEMS = (1_000, 20_000)
HUGE = 64 * 1024  # characters; large, yet far below the receive limit in any combination
ADVERSARIAL_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\r\n",
    "\x1b[2J",
    "\u202e\u200b\ufeff",
    "\U0001f4a5" * 40,
    "users/me",
    "users/",
    "users/../users/x",
    "users/me/..",
    "sessions/current",
    "sessions/",
    "connections/",
    "providers/",
    "providers/UPPER",
    "service-accounts/",
    "audit-events/0",
    "audit-events/-1",
    "audit-events/" + "9" * 18,
    "audit-events/" + "9" * 40,
    "audit-events/\u00b2",
    "audit-events/\uff11\uff12",
    "audit-events/\u0661",
    "audit-events/9223372036854775807",
    "users/\uff11",
    "\u00b2",
    "\U0001d7d9\U0001d7da",
    "1e20",
    "NaN",
    "-Infinity",
    "-0",
    "9" * 30,
    "https://[",
    "https://[::1",
    "https://example.com:99999/x",
    "https://user:pw@example.com/authorize",
    "https://example.com/#fragment",
    "http://127.0.0.1:1/token",
    "*",
    "%00",
    "' OR 1=1 --",
    "a" * 300,
    "a" * HUGE,
    "\u00e9" * HUGE,
    "x@example.com",
    "X@EXAMPLE.COM ",
    "a@b.c.",
)
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


# Appended to plausible values: text that is almost right gets furthest.
TAINTS = ("\x00", "\x7f", "\x1f", "\u202e", "\ud7ff\uffff", " ", "/..", "%2F", "a" * 300)


def tainted(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(str.__add__, values, st.sampled_from(TAINTS))


def _collection_of(seed: str) -> str:
    return seed.rpartition("/")[0] + "/" if "/" in seed else ""


def _long_text() -> st.SearchStrategy[str]:
    return st.builds(
        str.__mul__,
        st.sampled_from(("a", "\u00e9", "1", "/", "\u00b2", "a b", "\U0001f4a5")),
        st.sampled_from((1_000, 10_000, HUGE)),
    )


def _strings(seeds: Sequence[str]) -> st.SearchStrategy[str]:
    names = tuple(seed for seed in seeds if "/" in seed)
    return st.one_of(
        st.sampled_from(ADVERSARIAL_STRINGS),
        NON_ASCII_DIGITS,
        st.builds(str.__add__, st.sampled_from(names).map(_collection_of), NON_ASCII_DIGITS)
        if names
        else st.nothing(),
        _long_text(),
        st.sampled_from(tuple(seeds)) if seeds else st.nothing(),
        tainted(st.sampled_from(tuple(seeds))) if seeds else st.nothing(),
        st.text(max_size=80),
        st.text(st.characters(codec="ascii"), max_size=80),
    )


def _integers(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    low, high = bounds
    edges = tuple(n for n in (*EDGE_INTEGERS, low, high) if low <= n <= high)
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _scalar(field: FieldDescriptor, seeds: Sequence[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _strings(seeds)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=200)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:  # known numbers, and numbers the enum lacks
        known = tuple(value.number for value in field.enum_type.values)
        return st.one_of(st.sampled_from(known), _integers(INT32))
    if kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return _integers(INT64)
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return _integers((0, 2**64 - 1))
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return _integers((0, 2**32 - 1))
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    return _integers(INT32)


def _half_and_half(first: st.SearchStrategy[Any], second: st.SearchStrategy[Any]) -> Any:
    """`first` about as often as `second` (st.one_of would flatten `second` into its parts
    and give each of them as much weight as `first`)."""
    return st.booleans().flatmap(lambda pick_first: first if pick_first else second)


FIELD_MASK = "google.protobuf.FieldMask"


def _field_paths(descriptor: Descriptor, prefix: str = "", depth: int = 0) -> list[str]:
    """Every field path of `descriptor` two messages deep: `display_name`, `user.email`."""
    paths: list[str] = []
    for field in descriptor.fields:
        path = prefix + field.name
        paths.append(path)
        if field.message_type is not None and depth < 1 and not field.is_repeated:
            paths.extend(_field_paths(field.message_type, path + ".", depth + 1))
    return paths


def _field_masks(container: Descriptor) -> st.SearchStrategy[Message]:
    """Masks naming the request's own fields and the fields inside them, the wildcard,
    repeated and empty paths, paths into scalars, and paths that do not exist."""
    known = _field_paths(container)
    path = st.one_of(
        st.sampled_from(known),
        st.sampled_from(("*", "", ".", "a..b", "name.*", " name", "NAME", "\u00b2", "a" * 300)),
        st.builds("{}.{}".format, st.sampled_from(known), st.sampled_from(known)),
        st.text(max_size=20),
    )
    mask = message_factory.GetMessageClass(field_mask_pb2.FieldMask.DESCRIPTOR)
    return st.one_of(
        st.lists(path, max_size=8),
        st.builds(lambda item, count: [item] * count, path, st.sampled_from(REPEATED_ITEMS)),
    ).map(lambda paths: mask(paths=paths))


Plausible = Callable[[FieldDescriptor], "st.SearchStrategy[Any] | None"]


def _nothing_plausible(field: FieldDescriptor) -> st.SearchStrategy[Any] | None:
    return None


def _value(
    field: FieldDescriptor, seeds: Sequence[str], plausible: Plausible, depth: int
) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        return st.dictionaries(
            _scalar(key, seeds), _value(value, seeds, plausible, depth + 1), max_size=4
        )
    if field.message_type is not None and field.message_type.full_name == FIELD_MASK:
        single = _field_masks(field.containing_type)
    elif field.message_type is not None:
        single = request_messages(field.message_type, seeds, plausible, depth + 1)
    else:
        single = _scalar(field, seeds)
        likely = plausible(field)
        if likely is not None:
            if field.type == FieldDescriptor.TYPE_STRING:
                likely = _half_and_half(likely, tainted(likely))
            single = _half_and_half(likely, single)
    if field.is_repeated:
        return st.one_of(st.lists(single, max_size=6), _many(field, seeds))
    return single


def _many(field: FieldDescriptor, seeds: Sequence[str]) -> st.SearchStrategy[list[Any]]:
    """Thousands of one small item: huge as a list, small enough as a message."""
    if field.message_type is not None:
        item: st.SearchStrategy[Any] = st.just(
            message_factory.GetMessageClass(field.message_type)()
        )
    elif field.type == FieldDescriptor.TYPE_STRING:
        item = st.sampled_from(("", "a", "\u00b2", *seeds[:5]))
    else:
        item = _scalar(field, seeds)
    return st.builds(lambda value, count: [value] * count, item, st.sampled_from(REPEATED_ITEMS))


def request_messages(
    descriptor: Descriptor,
    seeds: Sequence[str] = (),
    plausible: Plausible = _nothing_plausible,
    depth: int = 0,
) -> st.SearchStrategy[Message]:
    """Messages of `descriptor` with any subset of its fields set to adversarial values:
    empty, huge and control-character strings, `seeds` (plausible resource names and
    tokens, and field names for update masks), extreme integers, unknown enum numbers.
    `plausible` may offer values that fit a field (by its name, say), tried as often as
    all the others together."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    names = (*seeds, *(field.name for field in descriptor.fields))
    fields = {field.name: _value(field, names, plausible, depth) for field in descriptor.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: cls(**values))


# -- bytes that are not a valid message ---------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


INVALID_UTF8 = (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"ok\xfe", b"\xf4\x90\x80\x80")


def _bad_utf8_in_a_string(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """A string field (top level or one message down) holding bytes that are not UTF-8."""
    paths: list[tuple[int, ...]] = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            paths.append((field.number,))
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            paths.extend(
                (field.number, inner.number)
                for inner in field.message_type.fields
                if inner.type == FieldDescriptor.TYPE_STRING
            )
    if not paths:
        return st.nothing()

    def encode(path: tuple[int, ...], payload: bytes) -> bytes:
        for number in reversed(path):
            payload = _length_delimited(number, payload)
        return payload

    return st.builds(encode, st.sampled_from(paths), st.sampled_from(INVALID_UTF8))


def _deep_groups(depth: int) -> bytes:
    """Unknown field 1000 as groups nested `depth` deep (wire types 3 and 4)."""
    return _varint(1000 << 3 | 3) * depth + _varint(1000 << 3 | 4) * depth


def _deep_messages(depth: int) -> bytes:
    payload = b""
    for _ in range(depth):
        payload = _length_delimited(1000, payload)
    return payload


TRUNCATIONS = (
    b"\x0a",  # a length-delimited tag and nothing more
    b"\x0a\x05ab",  # a length longer than what follows
    b"\x0a\xff\xff\xff\xff\x0f",  # a 4 GiB length
    b"\x08",  # a varint tag without its varint
    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # an 11-byte varint
    b"\x00",  # field number 0
    b"\x07",  # wire type 7
    b"\x0c",  # an end group without its start
    b"\xff\xff\xff\xff\xff",
)


def invalid_payloads(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Bytes that do not decode as `descriptor`: random bytes, truncations, invalid UTF-8
    in string fields, nesting deeper than the parser allows."""
    return st.one_of(
        st.sampled_from(TRUNCATIONS),
        _bad_utf8_in_a_string(descriptor),
        st.builds(_deep_groups, st.sampled_from((101, 1_000, 30_000))),
        st.builds(_deep_messages, st.sampled_from((101, 1_000))),
        st.binary(min_size=1, max_size=256),
    )


# -- authorization metadata ---------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload), signature


def forged_tokens(genuine: str) -> list[str]:
    """Tokens an attacker could make from a genuine one: privileges added, `alg` none or
    HS256, the signature dropped or flipped, the claims expired or from another issuer."""
    header, claims, signature = _jwt_parts(genuine)
    encode = lambda h, c, s: f"{_b64(json.dumps(h).encode())}.{_b64(json.dumps(c).encode())}.{s}"  # noqa: E731
    admin = {**claims, "roles": ["admin", "user"], "scope": "audit.read provider.credentials.read"}
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    return [
        encode(header, admin, signature),
        encode({**header, "alg": "none"}, admin, ""),
        encode({**header, "alg": "HS256"}, admin, signature),
        encode({**header, "kid": "../../etc/passwd"}, claims, signature),
        encode({**header, "kid": "x" * 2000}, claims, signature),
        encode(header, {**claims, "exp": 1}, signature),
        encode(header, {**claims, "iss": "someone-else"}, signature),
        encode(header, {**claims, "sub": "users/../admin"}, signature),
        encode(header, {key: value for key, value in claims.items() if key != "sub"}, signature),
        f"{genuine.rsplit('.', 1)[0]}.{flipped}",
        genuine + ".extra",
        genuine.replace(".", "..", 1),
    ]


def authorization_headers(genuine_tokens: Sequence[str]) -> st.SearchStrategy[str | None]:
    """`authorization` values that prove nothing: missing, malformed, oversized, forged."""
    forged = [token for genuine in genuine_tokens for token in forged_tokens(genuine)]
    return st.one_of(
        st.none(),
        st.sampled_from(
            (
                "",
                "Bearer",
                "Bearer ",
                "Bearer    ",
                "Basic dXNlcjpwYXNz",
                "Bearer a.b.c",
                "Bearer ....",
                "Bearer " + "a" * 9_000,
                "Bearer " + "eyJ" * 4_000,
                "Token abc",
            )
        ),
        st.sampled_from(tuple(forged)).map(lambda token: f"Bearer {token}"),
        HEADER_TEXT.map(lambda text: f"Bearer {text}"),
        HEADER_TEXT,
    )


def other_metadata() -> st.SearchStrategy[list[tuple[str, str | bytes]]]:
    """Request ids, trace parents and binary headers that the pipeline also reads."""
    pairs = st.one_of(
        st.tuples(st.just("x-request-id"), HEADER_TEXT),
        st.tuples(st.just("traceparent"), HEADER_TEXT),
        st.tuples(
            st.just("traceparent"),
            st.just("00-00000000000000000000000000000000-0000000000000000-00"),
        ),
        st.tuples(st.just("authorization-bin"), st.binary(max_size=64)),
        st.tuples(st.just("x-custom"), HEADER_TEXT),
    )
    return st.lists(pairs, max_size=3)


# -- page tokens --------------------------------------------------------------------------

_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=40),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
_CURSORS = _half_and_half(
    st.one_of(
        _JSON,
        st.sampled_from((0, -1, 1, 2**63 - 1, 2**63, 2**70, -(2**70), 1.5, "1", True, "\x00")),
    ),
    st.tuples(
        st.one_of(
            st.datetimes().map(lambda moment: moment.isoformat()),
            st.sampled_from(
                (
                    "0001-01-01",
                    "9999-12-31T23:59:59.999999+14:00",
                    "2020-01-01T00:00:00-23:59",
                    "2020-01-01T00:00:00Z",
                    "2020-W01",
                    "",
                )
            ),
        ),
        st.one_of(st.text(max_size=70), st.sampled_from(("", "a" * 64, "a" * 65, "\x00"))),
    ).map(list),
)


def forged_page_tokens(genuine: Sequence[str]) -> st.SearchStrategy[str]:
    """Page tokens carrying an attacker's cursor: decoded, the cursor replaced, and encoded
    again with the genuine query fingerprint, plus plain garbage."""

    def forge(token: str, cursor: Any) -> str:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        decoded["c"] = cursor
        return _b64(json.dumps(decoded).encode())

    garbage = st.one_of(
        _JSON.map(lambda value: _b64(json.dumps(value).encode())),
        st.sampled_from(("=", "====", "!!", "a" * 513, _b64(b"\xff\xfe"), _b64(b"{"))),
    )
    if not genuine:
        return garbage
    return _half_and_half(
        st.builds(forge, st.sampled_from(tuple(genuine)), _CURSORS),
        st.one_of(st.sampled_from(tuple(genuine)), garbage),
    )


# -- one field at a time, at its edges ----------------------------------------------------

TIMESTAMP = "google.protobuf.Timestamp"
EDGE_STRINGS = (
    "",
    "\x00",
    "\u00b2",
    "\uff11\uff12",
    "\u0661\u0662",
    "9" * 30,
    "NaN",
    "a" * 300,
    "\u00e9" * HUGE,
)
# Appended to the field's collection ("audit-events/"): digits of other scripts, a
# sequence past the BIGINT range, one at its end.
EDGE_IDS = ("\u00b2", "\uff11\uff12", "\u0661", "\U0001d7d9", "9" * 30, str(2**63 - 1), "")
EDGE_TIMES = (
    (253_402_300_800, 0),
    (-62_135_596_801, 0),
    (2**63 - 1, 0),
    (-(2**63), 0),
    (0, 1_000_000_000),
    (0, -1),
)


def _integer_edges(field: FieldDescriptor) -> tuple[int, ...]:
    kind = field.type
    if kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        low, high = INT64
    elif kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        low, high = 0, 2**64 - 1
    elif kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        low, high = 0, 2**32 - 1
    else:
        low, high = INT32
    wanted = (-1, 2**31 - 1, 2**31, -(2**31), 2**63 - 2, 2**63 - 1, -(2**63), 2**64 - 1, low, high)
    return tuple(dict.fromkeys(n for n in wanted if low <= n <= high))


def _edges(field: FieldDescriptor, collections: Sequence[str]) -> list[Any]:
    """The values most likely to break a handler that reads `field`."""
    message = field.message_type
    if message is not None and message.full_name == TIMESTAMP:
        cls = message_factory.GetMessageClass(message)
        return [cls(seconds=seconds, nanos=nanos) for seconds, nanos in EDGE_TIMES]
    if message is not None and message.full_name == FIELD_MASK:
        mask = message_factory.GetMessageClass(message)
        known = _field_paths(field.containing_type)
        return [
            mask(paths=["*"]),
            mask(paths=["no_such_field", *known]),
            mask(paths=[f"{known[0]}.{known[0]}" if known else "a.a"]),
            mask(paths=known * 2_000),
        ]
    if field.type == FieldDescriptor.TYPE_STRING:
        ids = [collection + suffix for collection in collections for suffix in EDGE_IDS]
        return [*EDGE_STRINGS, *ids]
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return [max(known) + 1, -1, 2**31 - 1, -(2**31)]
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return [float("nan"), float("inf"), -float("inf"), -0.0, 1e308]
    if field.type == FieldDescriptor.TYPE_BOOL:
        return [True]
    if field.type == FieldDescriptor.TYPE_BYTES:
        return [b"\xff" * 1_000]
    return list(_integer_edges(field))


Collections = Callable[[FieldDescriptor], Sequence[str]]


def _edge_values(
    descriptor: Descriptor, collections: Collections, prefix: str = ""
) -> list[tuple[str, Any]]:
    """(field path, value) for every field and each of its edge values, one message down
    too; repeated fields also with thousands of items."""
    found: list[tuple[str, Any]] = []
    for field in descriptor.fields:
        path = prefix + field.name
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            key, value = message.fields_by_name["key"], message.fields_by_name["value"]
            found.extend((path, {edge: _edges(value, [])[0]}) for edge in _edges(key, []))
            continue
        if message is not None and message.full_name not in (TIMESTAMP, FIELD_MASK):
            if not prefix and not field.is_repeated:
                found.extend(_edge_values(message, collections, path + "."))
            continue  # deeper, and repeated messages: the random requests go there
        single = _edges(field, collections(field))
        found.extend((path, [edge] if field.is_repeated else edge) for edge in single)
        if field.is_repeated:
            found.append((path, [_edges(field, [])[0]] * REPEATED_ITEMS[-1]))
    return found


def edge_requests(base: Message, collections: Collections) -> list[tuple[str, Message]]:
    """Copies of `base` (a request that gets past the first checks: plausible names),
    each with one field (or a field of the message in it) at an edge value, labelled
    `path=value`. Where the request has an `update_mask`, it names that field."""
    requests: list[tuple[str, Message]] = []
    descriptor = base.DESCRIPTOR
    for path, value in _edge_values(descriptor, collections):
        request = type(base)()
        request.CopyFrom(base)
        *outer, name = path.split(".")
        holder = getattr(request, outer[0]) if outer else request
        holder.ClearField(name)
        target = getattr(holder, name)
        if isinstance(value, Message):
            target.CopyFrom(value)
        elif isinstance(value, dict):
            target.update(value)
        elif isinstance(value, list):
            target.extend(value)
        else:
            setattr(holder, name, value)
        if outer and "update_mask" in descriptor.fields_by_name:
            request.update_mask.paths[:] = [name]  # type: ignore[attr-defined]
        requests.append((f"{path}={str(value)[:40]!r}", request))
    return requests
