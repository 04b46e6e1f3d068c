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


def test_times_are_checked_at_the_given_now():
    """exp, iat and nbf against the caller's `now`, by PyJWT's rules (exp is the first instant refused)."""
    at = 1_900_000_000
    token = auth.mint("u1", "customer", SECRET, ttl=60, now=at)
    assert auth.verify(token, SECRET, now=at + 59.9).exp == at + 60
    with pytest.raises(auth.TokenError, match="token expired"):
        auth.verify(token, SECRET, now=at + 60)
    with pytest.raises(auth.TokenError, match="invalid token"):  # issued after `now`
        auth.verify(token, SECRET, now=at - 1)
    later = jwt.encode({"sub": "u1", "role": "customer", "exp": at + 60, "nbf": at + 10}, SECRET, algorithm="HS256")
    with pytest.raises(auth.TokenError, match="invalid token"):  # not valid before nbf
        auth.verify(later, SECRET, now=at)
    assert auth.verify(later, SECRET, now=at + 10).user == "u1"
    for bad in ({"exp": "soon"}, {"exp": at + 60, "iat": "then"}, {"exp": at + 60, "nbf": []}):
        token = jwt.encode({"sub": "u1", "role": "customer", **bad}, SECRET, algorithm="HS256")
        with pytest.raises(auth.TokenError, match="invalid token"):
            auth.verify(token, SECRET, now=at)


@pytest.mark.parametrize("claims", [
    {"sub": "u1", "role": "root"},
    {"sub": "", "role": "customer"},
    {"sub": 5, "role": "customer"},
    {"sub": "a:b", "role": "customer"},
    {"sub": "a|b", "role": "customer"},
    {"sub": "a/b", "role": "customer"},
    {"sub": "a b", "role": "customer"},
    {"sub": "x" * 129, "role": "customer"},
    {"sub": "u1", "role": "customer", "tenant": "t:1"},
    {"sub": "u1", "role": "customer", "tenant": ""},
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


def test_policy_checks_issuer_and_audience():
    policy = auth.Policy(issuer="https://auth.example", audience="hub")
    good = auth.mint("u1", "customer", SECRET, issuer="https://auth.example", audience="hub")
    assert auth.verify(good, SECRET, policy).user == "u1"
    for token, reason in [
        (auth.mint("u1", "customer", SECRET, issuer="https://evil.example", audience="hub"), "issuer"),
        (auth.mint("u1", "customer", SECRET, audience="hub"), "iss"),
        (auth.mint("u1", "customer", SECRET, issuer="https://auth.example", audience="other"), "audience"),
        (auth.mint("u1", "customer", SECRET, issuer="https://auth.example"), "aud"),
    ]:
        with pytest.raises(auth.TokenError, match=reason):
            auth.verify(token, SECRET, policy)
    # Without a policy, iss/aud claims are not checked (a token minted for an audience still works).
    assert auth.verify(auth.mint("u1", "customer", SECRET, audience="x"), SECRET).user == "u1"


def test_policy_caps_the_lifetime():
    policy = auth.Policy(max_ttl_s=3600)
    assert auth.verify(auth.mint("u1", "customer", SECRET, ttl=3600), SECRET, policy).user == "u1"
    with pytest.raises(auth.TokenError, match="lifetime"):
        auth.verify(auth.mint("u1", "customer", SECRET, ttl=3601), SECRET, policy)
    # An old `iat` does not excuse an `exp` far in the future, nor does leaving `iat` out.
    now = int(time.time())
    for claims in ({"iat": now - 10 * 86400, "exp": now + 2 * 3600}, {"exp": now + 2 * 3600}):
        token = jwt.encode({"sub": "u1", "role": "customer", "tenant": "t", **claims}, SECRET, algorithm="HS256")
        with pytest.raises(auth.TokenError, match="lifetime"):
            auth.verify(token, SECRET, policy)


def test_policy_can_require_the_tenant_claim():
    token = jwt.encode({"sub": "u1", "role": "customer", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert auth.verify(token, SECRET).tenant == "default"
    with pytest.raises(auth.TokenError, match="tenant"):
        auth.verify(token, SECRET, auth.Policy(require_tenant=True))


def test_mint_refuses_ids_outside_the_character_set():
    for user, tenant in [("a:b", "t"), ("a b", "t"), ("", "t"), ("u", "t|x"), ("u", "")]:
        with pytest.raises(ValueError):
            auth.mint(user, "customer", SECRET, tenant=tenant)
    assert auth.verify(auth.mint("sam.o@ex-1", "customer", SECRET), SECRET).user == "sam.o@ex-1"


def test_minted_tokens_carry_a_random_jti():
    one, two = (auth.verify(auth.mint("u1", "customer", SECRET), SECRET) for _ in range(2))
    assert one.jti and two.jti and one.jti != two.jti
    assert one.iat is not None
    for bad in (7, "", "a b", "x" * 129):
        token = jwt.encode({"sub": "u1", "role": "customer", "jti": bad, "exp": int(time.time()) + 60}, SECRET,
                           algorithm="HS256")
        with pytest.raises(auth.TokenError):
            auth.verify(token, SECRET)
