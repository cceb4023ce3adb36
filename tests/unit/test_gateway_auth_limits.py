"""Credential store (enroll, verify, revoke, hashed at rest) and the rate limiter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ingest.gateway.credentials import CredentialError, CredentialStore
from ingest.gateway.limits import RateLimiter, TokenBucket, retry_after_header


def test_enroll_verify_and_identity(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "creds.json")
    key, token = store.enroll("acme", "ws01")
    cred = store.verify(token)
    assert cred is not None and cred.key_id == key
    assert cred.identity().tenant_id == "acme" and cred.identity().sensor_id == "ws01"
    # only a hash is stored; the secret is url-safe base64 and may itself hold "_"
    secret = token.split("_", 2)[2]
    assert len(secret) >= 40
    assert secret not in (tmp_path / "creds.json").read_text()
    assert (tmp_path / "creds.json").stat().st_mode & 0o077 == 0


def test_wrong_or_malformed_tokens_fail(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "creds.json")
    _key, token = store.enroll("acme", "ws01")
    assert store.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.verify(f"sst_{'0' * 16}_{'x' * 43}") is None
    assert store.verify("") is None
    assert store.verify("Bearer " + token) is None


def test_revocation_is_seen_by_another_store_instance(tmp_path: Path) -> None:
    gateway_view = CredentialStore(tmp_path / "creds.json")
    _, token = gateway_view.enroll("acme", "ws01")
    _, other = gateway_view.enroll("acme", "ws02")
    assert gateway_view.verify(token) is not None
    CredentialStore(tmp_path / "creds.json").revoke("ws01")  # the CLI, another process
    assert gateway_view.verify(token) is None
    assert gateway_view.verify(other) is not None
    assert [c.revoked is not None for c in gateway_view.credentials()] == [True, False]


def test_revoke_unknown_and_bad_names(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "creds.json")
    with pytest.raises(CredentialError):
        store.revoke("nobody")
    with pytest.raises(CredentialError):
        store.enroll("ac me", "ws01")
    with pytest.raises(CredentialError):
        store.enroll("acme", "")


def test_token_bucket_allows_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=100, burst=200, updated=0.0)
    assert bucket.take(200, now=0.0) == 0
    assert bucket.take(50, now=0.0) == pytest.approx(0.5)
    assert bucket.take(50, now=0.5) == 0  # refilled 50 in half a second
    assert bucket.take(500, now=10.0) == math.inf  # never fits


def test_rate_limiter_is_per_key_and_can_be_disabled() -> None:
    limiter = RateLimiter(events_per_second=10, burst=10)
    assert limiter.check("a", 10, now=0.0) == 0
    assert limiter.check("a", 1, now=0.0) > 0
    assert limiter.check("b", 10, now=0.0) == 0
    assert RateLimiter(0, 0).check("a", 10**9, now=0.0) == 0


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(2.2) == "3"
