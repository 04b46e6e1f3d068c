import time

import jwt
import pytest

from hub import auth

SECRET = "s" * 40


def test_mint_and_verify_round_trip():
    token = auth.mint("u1", "provider", SECRET, tenant="acme", ttl=60)
    claims = auth.verify(token, SECRET)
    assert (claims.user, claims.role, claims.tenant) == ("u1", "provider", "acme")
    assert claims.exp > time.time()


def test_alg_none_is_refused():
    token = jwt.encode({"sub": "u1", "role": "admin", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(auth.TokenError):
        auth.verify(token, SECRET)


def test_wrong_signature_is_refused():
    token = auth.mint("u1", "customer", "x" * 40)
    with pytest.raises(auth.TokenError):
        auth.verify(token, SECRET)


def test_other_algorithm_is_refused():
    token = jwt.encode({"sub": "u1", "role": "customer", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512")
    with pytest.raises(auth.TokenError, match="algorithm"):
        auth.verify(token, SECRET)


def test_expired_token_is_refused():
    token = auth.mint("u1", "customer", SECRET, ttl=10, now=time.time() - 100)
    with pytest.raises(auth.TokenError, match="expired"):
        auth.verify(token, SECRET)


@pytest.mark.parametrize("claims", [
    {"sub": "u1", "role": "root"},
    {"sub": "", "role": "customer"},
    {"sub": 5, "role": "customer"},
    {"sub": "a:b", "role": "customer"},
    {"role": "customer"},
])
def test_bad_claims_are_refused(claims):
    token = jwt.encode({**claims, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(auth.TokenError):
        auth.verify(token, SECRET)


@pytest.mark.parametrize("token", [None, "", "abc", "a.b.c", 12, "x" * 5000])
def test_garbage_is_refused(token):
    with pytest.raises(auth.TokenError):
        auth.verify(token, SECRET)


def test_mint_refuses_unknown_role():
    with pytest.raises(ValueError):
        auth.mint("u1", "superuser", SECRET)
