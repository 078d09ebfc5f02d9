"""Authentication with JWTs (docs/PROTOCOL.md "Authentication", docs/SECURITY.md
"Authentication"): the auth message, refused tokens and their codes, close 4001 and 4002,
fresh tokens, the audience, issuer and role-claim settings, RS256/ES256 with a public key
file and algorithm confusion.

The module runs with plank.anonymous_role = '' (welcome says "auth": "required"); tests
that need more settings apply them on top and restore them."""

import asyncio
import json
import os
import pwd
import shutil
import tempfile
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from conftest import Closed, ServerLog, run, sql, tag
from helpers import (SECRET, apply_settings, auth_refusal, authed, b64u, jws,  # noqa: F401
                     no_anonymous, now, open_client, plank_settings, refused, res,
                     send_auth, token)

pytestmark = pytest.mark.usefixtures("no_anonymous")


@pytest.fixture(scope="module")
def role():
    """A plain role (no privileges) that tokens of this module name."""
    name = f"sec_jwt_{tag()}"
    sql(f'CREATE ROLE "{name}" NOLOGIN')
    sql(f'GRANT "{name}" TO plank_authenticator')
    try:
        yield name
    finally:
        sql(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture(scope="module")
def other_role():
    name = f"sec_jwt_other_{tag()}"
    sql(f'CREATE ROLE "{name}" NOLOGIN')
    sql(f'GRANT "{name}" TO plank_authenticator')
    try:
        yield name
    finally:
        sql(f'DROP ROLE IF EXISTS "{name}"')


# --------------------------------------------------------------------------- the auth message


def test_welcome_says_auth_required_without_anonymous_role():
    async def body():
        c = await open_client()
        try:
            assert c.welcome.get("auth") == "required", c.welcome
            assert "role" not in c.welcome, c.welcome
        finally:
            await c.close()
    run(body())


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_valid_hmac_token_is_acknowledged_with_its_role(role, alg):
    exp = now() + 600

    async def body():
        c = await open_client()
        try:
            reply = await send_auth(c, token(role, alg=alg, exp=exp, sub="u1"), req_id="auth-1")
            assert reply["type"] == "ack", reply
            assert reply.get("id") == "auth-1" and reply.get("request") == "auth", reply
            assert reply.get("role") == role, reply
            assert reply.get("expires") == exp, reply
            assert isinstance(reply.get("seq"), int), reply
            # the connection is usable now
            pong = await c.request({"type": "ping", "id": "p"})
            assert pong["type"] == "pong", pong
        finally:
            await c.close()
    run(body())


def test_token_without_exp_has_no_expires(role):
    async def body():
        async with authed(token(role)) as c:
            assert "expires" not in c.auth_ack, c.auth_ack
    run(body())


def test_subscribe_before_auth_is_unauthenticated():
    async def body():
        c = await open_client()
        try:
            for req in ({"type": "subscribe", "id": "s1", "table": "public.items"},
                        {"type": "subscribe", "id": "s2", "channel": "chat"},
                        {"type": "subscribe", "id": "s3", "table": "public.no_such_table"}):
                reply = await c.request(req)
                assert reply["type"] == "error" and reply["code"] == "unauthenticated", (req, reply)
                assert reply.get("id") == req["id"], reply
            # still open, and authenticating afterwards works
            reply = await send_auth(c, token("postgres"))
            assert reply["type"] == "ack" and reply["role"] == "postgres", reply
            await c.subscribe("s1", table="public.items")
        finally:
            await c.close()
    run(body())


@pytest.mark.parametrize("req", [
    {"type": "ping", "id": "p1"},
    {"type": "unsubscribe", "id": "u1"},
], ids=["ping", "unsubscribe"])
def test_other_requests_before_auth_are_unauthenticated(req):
    """PROTOCOL.md, "Connection": "every other request is answered with
    `unauthenticated` until it does" (send auth)."""
    async def body():
        c = await open_client()
        try:
            reply = await c.request(req)
            assert reply["type"] == "error" and reply.get("code") == "unauthenticated", reply
        finally:
            await c.close()
    run(body())


def test_no_auth_within_auth_timeout_closes_4001():
    with plank_settings({"plank.auth_timeout": "1s"}):
        async def body():
            c = await open_client()
            try:
                start = time.monotonic()
                code = await c.expect_close(timeout=8)
                elapsed = time.monotonic() - start
                assert code == 4001, code
                assert 0.5 <= elapsed <= 5, f"closed after {elapsed:.2f}s, auth_timeout is 1s"
            finally:
                await c.close()
        run(body())


def test_auth_before_timeout_keeps_the_connection(role):
    with plank_settings({"plank.auth_timeout": "1s"}):
        async def body():
            async with authed(token(role)) as c:
                await asyncio.sleep(2.0)
                pong = await c.request({"type": "ping", "id": "p"})
                assert pong["type"] == "pong", pong
        run(body())


# --------------------------------------------------------------------------- refused tokens


def _none_token(role):
    return pyjwt.encode({"role": role}, None, algorithm="none")


REFUSED = [
    # (id, make token from role name, expected error code)
    ("forged-signature", lambda r: token(r, key="another-secret-0123456789abcdefgh"), "invalid_token"),
    ("tampered-claims", lambda r: (lambda t: t.split(".")[0] + "." + b64u('{"role":"postgres"}')
                                   + "." + t.split(".")[2])(token(r)), "invalid_token"),
    ("signature-stripped", lambda r: token(r).rsplit(".", 1)[0] + ".", "invalid_token"),
    ("expired", lambda r: token(r, exp=now() - 60), "token_expired"),
    ("expired-float", lambda r: token(r, exp=now() - 1.5), "token_expired"),
    ("not-yet-valid", lambda r: token(r, nbf=now() + 3600), "token_not_yet_valid"),
    # a present exp is always checked: 0 and -0.0 are the epoch, long past
    ("exp-zero", lambda r: token(r, exp=0), "token_expired"),
    ("exp-negative-zero", lambda r: token(r, exp=-0.0), "token_expired"),
    ("exp-zero-float", lambda r: token(r, exp=0.0), "token_expired"),
    ("exp-negative", lambda r: token(r, exp=-1), "token_expired"),
    ("exp-below-double-range", lambda r: jws({"alg": "HS256"}, '{"role":"%s","exp":-1e400}' % r),
     "token_expired"),
    ("exp-null", lambda r: token(r, exp=None), "invalid_token"),
    ("exp-true", lambda r: token(r, exp=True), "invalid_token"),
    ("exp-object", lambda r: token(r, exp={"t": now() + 60}), "invalid_token"),
    ("nbf-null", lambda r: token(r, nbf=None), "invalid_token"),
    ("nbf-string", lambda r: token(r, nbf=str(now() - 60)), "invalid_token"),
    ("nbf-beyond-double-range", lambda r: jws({"alg": "HS256"}, '{"role":"%s","nbf":1e400}' % r),
     "token_not_yet_valid"),
    ("alg-none-pyjwt", _none_token, "invalid_token"),
    ("alg-none-with-hmac", lambda r: jws({"alg": "none", "typ": "JWT"}, {"role": r},
                                         signature=b"x" * 32), "invalid_token"),
    ("alg-None-case", lambda r: jws({"alg": "None"}, {"role": r}), "invalid_token"),
    ("alg-lowercase-hs256", lambda r: jws({"alg": "hs256"}, {"role": r},
                                          signature=b"\0" * 32), "invalid_token"),
    ("alg-unknown", lambda r: jws({"alg": "HS1"}, {"role": r}, signature=b"\0" * 20), "invalid_token"),
    ("alg-missing", lambda r: jws({"typ": "JWT"}, {"role": r}, signature=b"\0" * 32), "invalid_token"),
    ("alg-not-a-string", lambda r: jws({"alg": ["HS256"]}, {"role": r}, signature=b"\0" * 32),
     "invalid_token"),
    ("crit-header", lambda r: token(r, header={"crit": ["exp"]}), "invalid_token"),
    ("crit-header-empty", lambda r: token(r, header={"crit": []}), "invalid_token"),
    ("unknown-role", lambda r: token(f"no_such_role_{tag()}"), "unknown_role"),
    ("role-sql-injection", lambda r: token("postgres; drop table items"), "unknown_role"),
    ("role-quote-injection", lambda r: token("postgres\"; DROP TABLE items; --"), "unknown_role"),
    ("role-missing", lambda r: token(None, sub="x"), "invalid_token"),
    ("role-empty", lambda r: token(""), "invalid_token"),
    ("role-number", lambda r: jws({"alg": "HS256"}, {"role": 10}), "invalid_token"),
    ("role-object", lambda r: jws({"alg": "HS256"}, {"role": {"name": r}}), "invalid_token"),
    ("role-too-long", lambda r: token("r" * 200), "invalid_token"),
    ("random-bytes", lambda r: os.urandom(48).hex(), "invalid_token"),
    ("three-dots", lambda r: "...", "invalid_token"),
    ("two-dots-empty", lambda r: "..", "invalid_token"),
    ("four-parts", lambda r: token(r) + ".x", "invalid_token"),
    ("two-parts", lambda r: token(r).rsplit(".", 1)[0], "invalid_token"),
    ("empty", lambda r: "", "invalid_token"),
    ("huge", lambda r: token(r, pad="x" * 40000), None),   # None: any refusal or an ack
    ("huge-garbage", lambda r: "A" * 50000 + "." + "B" * 5000 + "." + "C" * 100, "invalid_token"),
    ("padded-base64", lambda r: (lambda t: ".".join(p + "==" for p in t.split(".")))(token(r)),
     "invalid_token"),
    ("std-base64-alphabet", lambda r: token(r).replace("-", "+").replace("_", "/") + "+/",
     "invalid_token"),
    ("header-not-json", lambda r: jws("not json", {"role": r}), "invalid_token"),
    ("header-array", lambda r: jws("[1,2]", {"role": r}), "invalid_token"),
    ("claims-not-json", lambda r: b64u('{"alg":"HS256"}') + "." + b64u("{role:") + ".", "invalid_token"),
    ("claims-array", lambda r: jws({"alg": "HS256"}, '["role"]'), "invalid_token"),
    ("nul-in-claims", lambda r: jws({"alg": "HS256"}, b'{"role":"postgres"}\x00'), "invalid_token"),
    ("rs256-without-key-file", lambda r: jws({"alg": "RS256"}, {"role": r}, signature=b"\1" * 256),
     "invalid_token"),
]


@pytest.mark.parametrize("make,code", [(m, c) for _, m, c in REFUSED], ids=[i for i, _, _ in REFUSED])
def test_refused_token_gets_its_code_and_close_4001(role, make, code):
    tok = make(role)

    async def body():
        reply, close = await auth_refusal(tok)
        if code is None:
            # a huge but valid token: fine to accept (it fits in max_message_size) or refuse,
            # as long as a refusal follows the rules
            if reply is not None and reply["type"] == "ack":
                return
        assert reply is not None and reply["type"] == "error", (reply, close)
        if code is not None:
            assert reply["code"] == code, reply
        else:
            assert reply["code"] == "invalid_token", reply
        assert close == 4001, close
    run(body())


def test_refused_token_error_echoes_the_request_id(role):
    """PROTOCOL.md: "Every request may carry "id". Replies echo it."; error: "id is echoed
    when the request had one"."""
    async def body():
        c = await open_client()
        try:
            await c.send({"type": "auth", "id": "auth-77", "token": token(role, exp=now() - 60)})
            err, code = await refused(c)
            assert err["code"] == "token_expired", err
            assert code == 4001
            assert err.get("id") == "auth-77", err
        finally:
            await c.close()
    run(body())


def test_exp_that_is_not_a_number_is_not_ignored(role):
    """RFC 7519 4.1.4: exp is a NumericDate. A token whose exp is a string ("1", long past)
    must not be taken as a token without expiry (PROTOCOL.md: exp is checked when present)."""
    async def body():
        reply, close = await auth_refusal(token(role, exp=str(now() - 3600)))
        assert reply is not None and reply["type"] == "error", \
            f"a token with exp = \"<past time>\" (a string) was accepted: {reply}"
        assert reply["code"] in ("invalid_token", "token_expired"), reply
        assert close == 4001
    run(body())


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_non_canonical_signature_spelling_is_refused(role):
    """SECURITY.md: token segments must be canonical base64url, so a signature has exactly
    one spelling. An HS256 signature is 43 characters: the last one carries 2 spare bits;
    setting one gives another spelling of the same bytes, which must be refused."""
    good = token(role)
    head, sig = good.rsplit(".", 1)
    assert len(sig) % 4 == 3, sig
    bad = f"{head}.{sig[:-1]}{B64URL[B64URL.index(sig[-1]) | 1]}"
    assert bad != good

    async def body():
        reply, close = await auth_refusal(good)
        assert reply is not None and reply["type"] == "ack", (reply, close)
        reply, close = await auth_refusal(bad)
        assert reply is not None and reply["type"] == "error", (reply, close)
        assert reply["code"] == "invalid_token", reply
        assert close == 4001, close
    run(body())


def test_auth_without_a_token_string_is_invalid_message():
    async def body():
        c = await open_client()
        try:
            for req in ({"type": "auth", "id": "a"}, {"type": "auth", "id": "a", "token": 12},
                        {"type": "auth", "id": "a", "token": None}):
                reply = await c.request(req)
                assert reply["type"] == "error" and reply["code"] == "invalid_message", reply
            assert c.ws.open
        finally:
            await c.close()
    run(body())


def test_refused_token_on_an_authenticated_connection_closes_it(role):
    async def body():
        async with authed(token(role)) as c:
            await c.send({"type": "auth", "id": "a2",
                          "token": token(role, key="wrong-secret-0123456789abcdefgh")})
            err, code = await refused(c)
            assert err["code"] == "invalid_token", err
            assert code == 4001
    run(body())


def test_refusals_are_logged_without_the_token(role):
    from conftest import ServerLog
    log = ServerLog()
    secret_marker = "zz" + tag()
    tok = token(role, key="wrong-secret-0123456789abcdefgh", marker=secret_marker)

    async def body():
        reply, close = await auth_refusal(tok)
        assert reply["code"] == "invalid_token" and close == 4001
    run(body())
    time.sleep(0.3)
    text = log.text()
    if not text:
        pytest.skip("no server log (PLANK_LOGFILE)")
    assert "refused a token" in text, text[-2000:]
    assert tok not in text and tok.split(".")[1] not in text, "the token was logged"


# --------------------------------------------------------------------------- audience, issuer, role claim


def test_audience_and_issuer(role):
    aud, iss = "plank-aud-" + tag(), "https://issuer.example/" + tag()
    with plank_settings({"plank.jwt_audience": aud, "plank.jwt_issuer": iss}):
        cases = [
            ("both right", token(role, aud=aud, iss=iss), None),
            ("aud array", token(role, aud=["other", aud], iss=iss), None),
            ("wrong aud", token(role, aud="other", iss=iss), "invalid_token"),
            ("aud missing", token(role, iss=iss), "invalid_token"),
            ("aud prefix", token(role, aud=aud[:-1], iss=iss), "invalid_token"),
            ("aud array without it", token(role, aud=["a", "b"], iss=iss), "invalid_token"),
            ("aud not a string", token(role, aud=1, iss=iss), "invalid_token"),
            ("aud case", token(role, aud=aud.upper(), iss=iss), "invalid_token"),
            ("wrong iss", token(role, aud=aud, iss="https://evil.example/"), "invalid_token"),
            ("iss missing", token(role, aud=aud), "invalid_token"),
            ("iss array", token(role, aud=aud, iss=[iss]), "invalid_token"),
            ("iss with suffix", token(role, aud=aud, iss=iss + "x"), "invalid_token"),
        ]

        async def body():
            failures = []
            for what, tok, code in cases:
                reply, close = await auth_refusal(tok)
                if code is None:
                    ok = reply is not None and reply["type"] == "ack" and reply["role"] == role
                else:
                    ok = reply is not None and reply.get("code") == code and close == 4001
                if not ok:
                    failures.append((what, reply, close))
            assert not failures, failures
        run(body())


def test_role_claim_path(role, other_role):
    with plank_settings({"plank.jwt_role_claim": "app_metadata.role"}):
        async def body():
            # the role is read at the path; a top-level role claim is not used
            tok = token(other_role, app_metadata={"role": role})
            reply, close = await auth_refusal(tok)
            assert reply is not None and reply["type"] == "ack" and reply["role"] == role, reply
            reply, close = await auth_refusal(token(role))
            assert reply["code"] == "invalid_token" and close == 4001, reply
            reply, close = await auth_refusal(token(None, app_metadata=role))
            assert reply["code"] == "invalid_token" and close == 4001, reply
        run(body())


# --------------------------------------------------------------------------- RS256, ES256


@pytest.fixture(scope="module")
def keys():
    """Key pairs and a directory readable by the postgres user for the public keys."""
    d = tempfile.mkdtemp(prefix="plank-sec-keys-")
    os.chmod(d, 0o755)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_other = ec.generate_private_key(ec.SECP256R1())

    def write(name, private_key):
        pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(pem)
        os.chmod(path, 0o644)
        return path, pem
    rsa_path, rsa_pem = write("rsa.pub.pem", rsa_key)
    ec_path, ec_pem = write("ec.pub.pem", ec_key)
    try:
        yield dict(rsa=rsa_key, rsa_other=rsa_other, ec=ec_key, ec_other=ec_other,
                   rsa_path=rsa_path, rsa_pem=rsa_pem, ec_path=ec_path, ec_pem=ec_pem, dir=d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _signed(private_key, alg, claims, header=None):
    return pyjwt.encode(claims, private_key, algorithm=alg, headers=header)


def _hs_with_key(key_bytes, claims, alg="HS256"):
    return jws({"alg": alg, "typ": "JWT"}, claims, key=key_bytes)


def test_rs256_public_key(keys, role):
    with plank_settings({"plank.jwt_public_key_file": keys["rsa_path"]}):
        async def body():
            failures = []
            accepted = [
                ("RS256", _signed(keys["rsa"], "RS256", {"role": role})),
                ("RS384", _signed(keys["rsa"], "RS384", {"role": role})),
                ("RS512", _signed(keys["rsa"], "RS512", {"role": role, "exp": now() + 60})),
            ]
            for what, tok in accepted:
                reply, close = await auth_refusal(tok)
                if not (reply and reply["type"] == "ack" and reply["role"] == role):
                    failures.append((what, "should be accepted", reply, close))
            refused_ = [
                ("RS256 by another key", _signed(keys["rsa_other"], "RS256", {"role": role})),
                # HS/RS confusion: an HMAC keyed with the public key's PEM text (and variants)
                ("HS256 keyed with the PEM", _hs_with_key(keys["rsa_pem"], {"role": role})),
                ("HS256 keyed with the PEM, no newline",
                 _hs_with_key(keys["rsa_pem"].rstrip(b"\n"), {"role": role})),
                ("HS512 keyed with the PEM", _hs_with_key(keys["rsa_pem"], {"role": role}, "HS512")),
                ("HS256 keyed with the file path", _hs_with_key(keys["rsa_path"].encode(), {"role": role})),
                # the key must be of the algorithm's family
                ("ES256 by an EC key while the key is RSA", _signed(keys["ec"], "ES256", {"role": role})),
                ("PS256 (not accepted)", _signed(keys["rsa"], "PS256", {"role": role})),
                ("RS256 signature over other claims",
                 (lambda a, b: a.rsplit(".", 1)[0] + "." + b.rsplit(".", 1)[1])(
                     _signed(keys["rsa"], "RS256", {"role": "postgres"}),
                     _signed(keys["rsa"], "RS256", {"role": role}))),
                ("RS256 expired", _signed(keys["rsa"], "RS256", {"role": role, "exp": now() - 10})),
            ]
            for what, tok in refused_:
                reply, close = await auth_refusal(tok)
                if not (reply and reply["type"] == "error" and close == 4001
                        and reply["code"] in ("invalid_token", "token_expired")):
                    failures.append((what, "should be refused", reply, close))
            # the HMAC secret still works alongside the public key
            reply, close = await auth_refusal(token(role))
            if not (reply and reply["type"] == "ack"):
                failures.append(("HS256 with plank.jwt_secret", "should be accepted", reply, close))
            assert not failures, failures
        run(body())


def test_es256_public_key(keys, role):
    with plank_settings({"plank.jwt_public_key_file": keys["ec_path"]}):
        async def body():
            failures = []
            reply, close = await auth_refusal(_signed(keys["ec"], "ES256", {"role": role}))
            if not (reply and reply["type"] == "ack" and reply["role"] == role):
                failures.append(("ES256", "should be accepted", reply, close))

            # a DER-encoded ECDSA signature (not JWS's R || S) is not accepted
            header = b64u('{"alg":"ES256","typ":"JWT"}')
            claims = b64u('{"role":"%s"}' % role)
            der = keys["ec"].sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
            refused_ = [
                ("ES256 by another key", _signed(keys["ec_other"], "ES256", {"role": role})),
                ("HS256 keyed with the EC PEM", _hs_with_key(keys["ec_pem"], {"role": role})),
                ("RS256 while the key is EC", _signed(keys["rsa"], "RS256", {"role": role})),
                ("ES256 with a DER signature", f"{header}.{claims}.{b64u(der)}"),
                ("ES256 with a zero signature", f"{header}.{claims}.{b64u(bytes(64))}"),
                ("ES256 with a short signature", f"{header}.{claims}.{b64u(bytes(10))}"),
                ("ES384 header, ES256 signature",
                 (lambda t: b64u('{"alg":"ES384","typ":"JWT"}') + "." + t.split(".", 1)[1])(
                     _signed(keys["ec"], "ES256", {"role": role}))),
            ]
            for what, tok in refused_:
                reply, close = await auth_refusal(tok)
                if not (reply and reply["type"] == "error" and reply["code"] == "invalid_token"
                        and close == 4001):
                    failures.append((what, "should be refused", reply, close))
            assert not failures, failures
        run(body())


def test_unreadable_public_key_file_refuses_rs_tokens_and_keeps_serving(keys, role):
    missing = os.path.join(keys["dir"], "missing.pem")
    garbage = os.path.join(keys["dir"], "garbage.pem")
    with open(garbage, "w") as f:
        f.write("-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n")
    os.chmod(garbage, 0o644)
    for path in (missing, garbage):
        with plank_settings({"plank.jwt_public_key_file": path}):
            async def body():
                reply, close = await auth_refusal(_signed(keys["rsa"], "RS256", {"role": role}))
                assert reply and reply["code"] == "invalid_token" and close == 4001, (path, reply)
                reply, close = await auth_refusal(token(role))
                assert reply and reply["type"] == "ack", (path, reply)
            run(body())


# --------------------------------------------------------------------------- expiry, fresh tokens


def test_token_expiry_closes_4002(role):
    async def body():
        c = await open_client()
        try:
            exp = now() + 2
            reply = await send_auth(c, token(role, exp=exp))
            assert reply["type"] == "ack" and reply["expires"] == exp, reply
            start = time.monotonic()
            code = await c.expect_close(timeout=10)
            elapsed = time.monotonic() - start
            assert code == 4002, code
            assert elapsed <= 4.5, f"closed {elapsed:.2f}s after auth, the token lived 2s"
            assert time.time() >= exp - 1.0, "closed before the token expired"
        finally:
            await c.close()
    run(body(), timeout=30)


def test_fresh_token_keeps_the_connection_open(role):
    async def body():
        c = await open_client()
        try:
            first_exp = now() + 2
            reply = await send_auth(c, token(role, exp=first_exp, sub="u"))
            assert reply["type"] == "ack", reply
            await asyncio.sleep(0.5)
            fresh_exp = now() + 30
            reply = await send_auth(c, token(role, exp=fresh_exp, sub="u"), req_id="a2")
            assert reply["type"] == "ack" and reply["expires"] == fresh_exp, reply
            # past the first token's expiry
            while time.time() < first_exp + 2:
                await asyncio.sleep(0.5)
            pong = await c.request({"type": "ping", "id": "p"})
            assert pong["type"] == "pong", pong
        finally:
            await c.close()
    run(body(), timeout=30)


def test_fresh_token_for_another_role_is_role_mismatch(role, other_role):
    async def body():
        c = await open_client()
        try:
            exp = now() + 3
            reply = await send_auth(c, token(role, exp=exp))
            assert reply["type"] == "ack", reply
            reply = await send_auth(c, token(other_role, exp=now() + 60), req_id="a2")
            assert reply["type"] == "error" and reply["code"] == "role_mismatch", reply
            assert reply.get("id") == "a2", reply
            # the old token stays: same role, and still closed at its expiry
            pong = await c.request({"type": "ping", "id": "p"})
            assert pong["type"] == "pong", pong
            code = await c.expect_close(timeout=10)
            assert code == 4002, code
        finally:
            await c.close()
    run(body(), timeout=30)


@pytest.mark.parametrize("exp", [253402300799, 10 ** 13, 2 ** 62, "1e400"],
                         ids=["year-9999", "1e13", "2^62", "beyond-double-range"])
def test_far_future_exp_is_accepted(role, exp):
    """A token whose exp is far in the future has not expired (RFC 7519 4.1.4: any
    NumericDate); it must get its ack and the connection must stay open."""
    async def body():
        c = await open_client()
        try:
            tok = (token(role, exp=exp) if isinstance(exp, int)
                   else jws({"alg": "HS256"}, '{"role":"%s","exp":%s}' % (role, exp)))
            try:
                reply = await send_auth(c, tok)
            except Closed as e:
                raise AssertionError(f"exp = {exp}: the connection was closed with {e.code} "
                                     f"{e.reason!r} instead of an ack") from None
            assert reply["type"] == "ack", reply
            await asyncio.sleep(1.5)
            try:
                pong = await c.request({"type": "ping", "id": "p"})
            except Closed as e:
                raise AssertionError(f"exp = {exp}: closed with {e.code} {e.reason!r}") from None
            assert pong["type"] == "pong", pong
        finally:
            await c.close()
    run(body())


def test_fresh_token_that_is_expired_closes_4001(role):
    async def body():
        async with authed(token(role, exp=now() + 60)) as c:
            await c.send({"type": "auth", "id": "a2", "token": token(role, exp=now() - 5)})
            err, code = await refused(c)
            assert err["code"] == "token_expired" and code == 4001, (err, code)
    run(body())


# --------------------------------------------------------------------------- anonymous role and tokens


def test_token_upgrades_an_anonymous_connection(role, res):
    """PROTOCOL.md, "Connection": clients *without a token* act as plank.anonymous_role;
    a client that sends a valid token acts as the token's role. With an anonymous role
    configured every connection starts anonymous, so a token naming another role must
    be accepted (else no token role but the anonymous one could ever be used)."""
    anon = res.role("sec_anon")
    with plank_settings({"plank.anonymous_role": anon}):
        async def body():
            c = await open_client()
            try:
                assert c.welcome.get("role") == anon, c.welcome
                reply = await send_auth(c, token(role))
                assert reply["type"] == "ack" and reply.get("role") == role, reply
            finally:
                await c.close()
        run(body())


def test_anonymous_role_that_does_not_exist_requires_auth():
    with plank_settings({"plank.anonymous_role": f"no_such_role_{tag()}"}):
        async def body():
            c = await open_client()
            try:
                assert c.welcome.get("auth") == "required", c.welcome
                reply = await c.request({"type": "subscribe", "id": "s", "table": "public.items"})
                assert reply["code"] == "unauthenticated", reply
            finally:
                await c.close()
        run(body())


def test_past_nbf_is_accepted(role):
    """nbf 0 and -0.0 are the epoch: the token has long been valid (RFC 7519 4.1.5)."""
    async def body():
        for nbf in (0, -0.0, now() - 5):
            reply, close = await auth_refusal(token(role, nbf=nbf, exp=now() + 60))
            assert reply is not None and reply["type"] == "ack", (nbf, reply, close)
    run(body())


# --------------------------------------------------------------------------- key files


@pytest.fixture(scope="module")
def key_dir():
    """A directory the postgres user can enter, for key files it must read."""
    d = tempfile.mkdtemp(prefix="plank-sec-keyfiles-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _write_for_postgres(path, data, mode=0o600):
    """Write a key file the server's OS user owns, replacing any file at path at once
    (write, then rename, as a rotation should)."""
    if isinstance(data, str):
        data = data.encode()
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    pw = pwd.getpwnam("postgres")
    os.chown(tmp, pw.pw_uid, pw.pw_gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def _reread_keys():
    """Reload the configuration (the key files are re-read on every reload) and wait until
    the worker has done it."""
    apply_settings({})


def _accepted(reply):
    return reply is not None and reply["type"] == "ack"


def _refused_invalid(reply, close):
    return reply is not None and reply.get("code") == "invalid_token" and close == 4001


async def _check(cases, role):
    """cases: (what, token, True to be accepted / False to be refused as invalid_token)."""
    failures = []
    for what, tok, ok in cases:
        reply, close = await auth_refusal(tok)
        if ok and not (_accepted(reply) and reply.get("role") == role):
            failures.append((what, "should be accepted", reply, close))
        if not ok and not _refused_invalid(reply, close):
            failures.append((what, "should be refused with invalid_token", reply, close))
    assert not failures, failures


def test_secret_file_verifies_hs_tokens_rotates_on_reload_and_never_reaches_the_log(key_dir, role):
    """SECURITY.md, "Keys": plank.jwt_secret_file holds the HMAC secret (trailing newline
    not part of it), replaces plank.jwt_secret, is re-read on reload, and the secret is
    never written to the server log (PostgreSQL logs changed settings, not files)."""
    log = ServerLog()
    first = "first-" + tag() + "-0123456789abcdef0123456789"
    second = "second-" + tag() + "-0123456789abcdef0123456789"
    path = _write_for_postgres(os.path.join(key_dir, "jwt.secret"), first + "\n")
    with plank_settings({"plank.jwt_secret_file": path}):
        run(_check([
            ("HS256 with the file's secret", token(role, key=first), True),
            ("HS512 with the file's secret", token(role, key=first, alg="HS512"), True),
            ("HS256 with the secret and its newline", token(role, key=first + "\n"), False),
            ("HS256 with plank.jwt_secret (not used while the file is set)", token(role), False),
        ], role))
        # rotation: a new file content and a reload switch the key
        _write_for_postgres(path, second + "\r\n")
        _reread_keys()
        run(_check([
            ("HS256 with the rotated secret", token(role, key=second), True),
            ("HS256 with the secret before rotation", token(role, key=first), False),
        ], role))
    # back to plank.jwt_secret
    run(_check([("HS256 with plank.jwt_secret again", token(role), True),
                ("HS256 with the file's secret after RESET", token(role, key=second), False)], role))
    time.sleep(0.3)
    text = log.text()
    if not text:
        pytest.skip("no server log (PLANK_LOGFILE)")
    assert "plank.jwt_secret_file" in text, "the reloads are not in the log"
    assert first not in text and second not in text, "a secret from the file was logged"


def test_unusable_secret_file_keeps_the_keys_in_force(key_dir, role):
    """A secret file that is group/world-readable, empty or missing is reported with a
    WARNING and the secret in force before stays; the worker keeps serving."""
    good = "good-" + tag() + "-0123456789abcdef0123456789"
    other = "other-" + tag() + "-0123456789abcdef0123456789"
    path = _write_for_postgres(os.path.join(key_dir, "good.secret"), good)
    open_file = _write_for_postgres(os.path.join(key_dir, "open.secret"), other, mode=0o644)
    group_file = _write_for_postgres(os.path.join(key_dir, "group.secret"), other, mode=0o640)
    empty = _write_for_postgres(os.path.join(key_dir, "empty.secret"), "\n")
    missing = os.path.join(key_dir, "missing.secret")
    with plank_settings({"plank.jwt_secret_file": path}):
        for bad, expect in ((open_file, "has group or world access"),
                            (group_file, "has group or world access"),
                            (empty, "is empty"),
                            (missing, "could not open plank.jwt_secret_file")):
            log = ServerLog()
            with plank_settings({"plank.jwt_secret_file": bad}):
                run(_check([
                    (f"{bad}: the secret in force before", token(role, key=good), True),
                    (f"{bad}: the unusable file's secret", token(role, key=other), False),
                ], role))
            text = log.text()
            if text:
                assert expect in text and bad in text, (expect, text[-3000:])
                assert other not in text
        # the good file is back in force
        run(_check([("the good file again", token(role, key=good), True)], role))


# --------------------------------------------------------------------------- JWKS


def _int_b64u(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return b64u(n.to_bytes(size, "big"))


def _jwk(key, kid=None, alg=None, **extra):
    """The public JWK (RFC 7518 section 6) of a cryptography private key, or an oct JWK of
    bytes."""
    if isinstance(key, bytes):
        jwk = {"kty": "oct", "k": b64u(key)}
    elif isinstance(key, rsa.RSAPrivateKey):
        pub = key.public_key().public_numbers()
        jwk = {"kty": "RSA", "n": _int_b64u(pub.n), "e": _int_b64u(pub.e)}
    else:
        pub = key.public_key().public_numbers()
        crv, size = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48),
                     "secp521r1": ("P-521", 66)}[key.curve.name]
        jwk = {"kty": "EC", "crv": crv, "x": _int_b64u(pub.x, size), "y": _int_b64u(pub.y, size)}
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    jwk.update(extra)
    return jwk


def _jwks(*keys):
    return json.dumps({"keys": list(keys)})


def _kid_signed(key, alg, claims, kid=None):
    """A token signed by key (a cryptography private key or HMAC bytes) with kid."""
    header = {"kid": kid} if kid is not None else None
    if isinstance(key, bytes):
        hdr = {"alg": alg, "typ": "JWT"}
        hdr.update(header or {})
        return jws(hdr, claims, key=key)
    return pyjwt.encode(claims, key, algorithm=alg, headers=header)


@pytest.fixture(scope="module")
def jwk_keys(keys):
    return dict(
        rsa=keys["rsa"], rsa_other=keys["rsa_other"], ec=keys["ec"], ec_other=keys["ec_other"],
        ec384=ec.generate_private_key(ec.SECP384R1()),
        ec521=ec.generate_private_key(ec.SECP521R1()),
        oct=os.urandom(64), oct_other=os.urandom(64),
    )


def test_jwks_keys_are_chosen_by_kid(key_dir, jwk_keys, role):
    """plank.jwt_jwks_file: RSA, EC and oct keys chosen by the header's kid (RFC 7515
    4.1.4); an unknown kid, a kid whose key does not suit the algorithm, and a token
    without kid against several keys are refused; the key set is the only source of keys."""
    k = jwk_keys
    path = _write_for_postgres(os.path.join(key_dir, "keys.jwks"), _jwks(
        _jwk(k["rsa"], "rsa-1", use="sig"),
        _jwk(k["ec"], "ec-256", alg="ES256"),
        _jwk(k["ec384"], "ec-384"),
        _jwk(k["ec521"], "ec-521"),
        _jwk(k["oct"], "hmac-1"),
        _jwk(k["oct_other"], "hmac-512", alg="HS512"),
        # left out with a warning each: not for signatures, unknown kty, bad alg
        _jwk(k["rsa_other"], "enc-1", use="enc"),
        {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64u(bytes(32))},
        _jwk(k["oct_other"], "bad-alg", alg="RS256"),
    ))
    c = {"role": role}
    with plank_settings({"plank.jwt_jwks_file": path}):
        run(_check([
            ("RS256 by kid", _kid_signed(k["rsa"], "RS256", c, "rsa-1"), True),
            ("RS512 by kid", _kid_signed(k["rsa"], "RS512", c, "rsa-1"), True),
            ("ES256 by kid", _kid_signed(k["ec"], "ES256", c, "ec-256"), True),
            ("ES384 by kid", _kid_signed(k["ec384"], "ES384", c, "ec-384"), True),
            ("ES512 by kid", _kid_signed(k["ec521"], "ES512", c, "ec-521"), True),
            ("HS256 by kid", _kid_signed(k["oct"], "HS256", c, "hmac-1"), True),
            ("HS384 by kid", _kid_signed(k["oct"], "HS384", c, "hmac-1"), True),
            ("HS512 by kid with alg HS512", _kid_signed(k["oct_other"], "HS512", c, "hmac-512"), True),
            ("unknown kid", _kid_signed(k["rsa"], "RS256", c, "rsa-2"), False),
            ("kid of another key", _kid_signed(k["rsa_other"], "RS256", c, "rsa-1"), False),
            ("kid differs in case", _kid_signed(k["rsa"], "RS256", c, "RSA-1"), False),
            ("kid with a NUL", _kid_signed(k["rsa"], "RS256", c, "rsa-1\0"), False),
            ("kid not a string", jws({"alg": "HS256", "kid": 1}, c, key=k["oct"]), False),
            ("no kid, several keys", _kid_signed(k["rsa"], "RS256", c), False),
            ("ES256 naming the RSA key", _kid_signed(k["ec"], "ES256", c, "rsa-1"), False),
            ("ES256 naming the P-384 key", _kid_signed(k["ec"], "ES256", c, "ec-384"), False),
            ("ES384 naming the ES256 key", _kid_signed(k["ec384"], "ES384", c, "ec-256"), False),
            ("HS256 naming the HS512 key", _kid_signed(k["oct_other"], "HS256", c, "hmac-512"), False),
            ("HS256 keyed with the RSA JWK's n, naming it",
             jws({"alg": "HS256", "kid": "rsa-1"}, c,
                 key=k["rsa"].public_key().public_numbers().n.to_bytes(256, "big")), False),
            ("RS256 naming the oct key", _kid_signed(k["rsa"], "RS256", c, "hmac-1"), False),
            ("key with use enc", _kid_signed(k["rsa_other"], "RS256", c, "enc-1"), False),
            ("key with an alg of another kty", _kid_signed(k["oct_other"], "HS256", c, "bad-alg"), False),
            ("plank.jwt_secret (not used with a key set)", token(role), False),
            ("plank.jwt_secret with a kid", token(role, header={"kid": "hmac-1"}), False),
        ], role))

        async def expired():
            reply, close = await auth_refusal(_kid_signed(k["rsa"], "RS256", dict(c, exp=0), "rsa-1"))
            assert reply is not None and reply.get("code") == "token_expired" and close == 4001, reply
        run(expired())


def test_jwks_single_key_serves_tokens_without_kid_and_rotates_on_reload(key_dir, jwk_keys, role):
    """With exactly one key, a token without kid uses it; rotating the file (new key, new
    kid) and reloading switches keys; a file that is not a key set keeps the keys in force."""
    k = jwk_keys
    c = {"role": role}
    path = _write_for_postgres(os.path.join(key_dir, "rotate.jwks"), _jwks(_jwk(k["ec"], "2026-01")))
    with plank_settings({"plank.jwt_jwks_file": path}):
        run(_check([
            ("ES256 by kid", _kid_signed(k["ec"], "ES256", c, "2026-01"), True),
            ("ES256 without kid, one key", _kid_signed(k["ec"], "ES256", c), True),
            ("ES256 with an unknown kid", _kid_signed(k["ec"], "ES256", c, "2026-02"), False),
        ], role))

        # rotation step 1: publish the new key next to the old one
        _write_for_postgres(path, _jwks(_jwk(k["ec"], "2026-01"), _jwk(k["rsa"], "2026-02")))
        _reread_keys()
        run(_check([
            ("old key by kid", _kid_signed(k["ec"], "ES256", c, "2026-01"), True),
            ("new key by kid", _kid_signed(k["rsa"], "RS256", c, "2026-02"), True),
            ("no kid, two keys", _kid_signed(k["ec"], "ES256", c), False),
        ], role))

        # step 2: retire the old key
        _write_for_postgres(path, _jwks(_jwk(k["rsa"], "2026-02")))
        _reread_keys()
        run(_check([
            ("retired key", _kid_signed(k["ec"], "ES256", c, "2026-01"), False),
            ("new key by kid", _kid_signed(k["rsa"], "RS256", c, "2026-02"), True),
        ], role))

        # a broken or open file is reported and changes nothing
        for content, mode, expect in (("{not json", 0o600, "is not a JSON Web Key Set"),
                                      ('{"keys": []}', 0o600, "holds no usable key"),
                                      (_jwks(_jwk(k["ec"], "2026-01")), 0o644,
                                       "has group or world access")):
            log = ServerLog()
            _write_for_postgres(path, content, mode)
            _reread_keys()
            run(_check([
                (f"{expect}: key in force", _kid_signed(k["rsa"], "RS256", c, "2026-02"), True),
                (f"{expect}: key of the bad file", _kid_signed(k["ec"], "ES256", c, "2026-01"), False),
            ], role))
            text = log.text()
            if text:
                assert expect in text, (expect, text[-3000:])
    # without the key set, plank.jwt_secret is in force again
    run(_check([("plank.jwt_secret", token(role), True)], role))


def test_jwks_file_missing_at_first_refuses_every_token(key_dir, role):
    """A key set that cannot be read when it is first named leaves no key at all: tokens
    are refused, the HMAC secret too, and the worker keeps serving."""
    missing = os.path.join(key_dir, "missing-" + tag() + ".jwks")
    with plank_settings({"plank.jwt_jwks_file": missing}):
        run(_check([("plank.jwt_secret", token(role), False)], role))

        async def ping():
            c = await open_client()
            try:
                reply = await c.request({"type": "ping", "id": "p"})
                assert reply["type"] == "error" and reply["code"] == "unauthenticated", reply
            finally:
                await c.close()
        run(ping())
