"""The gateway token out of an ``Authorization`` header, in every way shippers send one.

Pure: no store, no I/O. Shippers cannot be taught a new scheme, so the one token
``sst_<key id>_<secret>`` is accepted as:

* ``Bearer <token>`` (our client, Fluent Bit / Vector / OTel ``bearertokenauth``);
* ``ApiKey <token>`` and ``ApiKey base64(<id>:<token>)`` (Elasticsearch API keys: Beats'
  and Elastic Agent's ``api_key: "id:key"``, the Python client's ``api_key=(id, key)``),
  where ``<id>`` is anything; also ``ApiKey base64(<key id>:<secret>)``, the token split
  the way Elasticsearch splits an API key;
* ``Basic base64(<user>:<token>)`` with any user name (syslog-ng ``user()/password()``,
  rsyslog ``uid/pwd``, NXLog), or ``Basic base64(<key id>:<secret>)``.

Whatever the scheme, the candidate must still match the token's shape before the store
looks at it, and the header is bounded before anything is decoded.
"""

from __future__ import annotations

import base64
import binascii

from ingest.gateway.credentials import TOKEN_RE

#: Longest Authorization header looked at (a token is ~60 characters).
MAX_HEADER = 2048

#: What a 401 from the shipper-facing routes announces.
CHALLENGES = ('Basic realm="sigstream"', "ApiKey", 'Bearer realm="sigstream"')


def _pair(encoded: str) -> tuple[str, str] | None:
    try:
        text = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, secret = text.partition(":")
    return (user, secret) if sep else None


def _from_pair(user: str, secret: str) -> str | None:
    if TOKEN_RE.match(secret):
        return secret
    joined = f"sst_{user}_{secret}"  # the key id and the secret given separately
    return joined if TOKEN_RE.match(joined) else None


def token_from_header(header: str | None) -> str | None:
    """The gateway token a header carries, or None (missing, unknown scheme, malformed)."""
    if not header or len(header) > MAX_HEADER:
        return None
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if not value:
        return None
    if scheme == "bearer":
        return value
    if scheme == "apikey":
        if TOKEN_RE.match(value):
            return value
        pair = _pair(value)
        return _from_pair(*pair) if pair else None
    if scheme == "basic":
        pair = _pair(value)
        return _from_pair(*pair) if pair else None
    return None
