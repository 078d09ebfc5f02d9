"""TLS (docs/SECURITY.md "Transport"): plank.ssl = on serves wss:// with
plank.ssl_cert_file / plank.ssl_key_file.

plank.ssl is a postmaster setting, so this module starts a throwaway cluster of its own,
as scripts/test.sh does (initdb as postgres in a temp dir; PostgreSQL on 127.0.0.1:5496,
Plank on 127.0.0.1:18094), with a self-signed certificate made here, and stops it with
pg_ctl (by its PID file) at the end."""

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import tempfile
import time
import warnings

import psycopg2
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from conftest import Client, PGCTL, as_postgres, run, sql

TLS_PGPORT = int(os.environ.get("PLANK_TLS_PGPORT", "5496"))
TLS_PORT = int(os.environ.get("PLANK_TLS_PORT", "18094"))
PGBIN = os.path.dirname(PGCTL)


def _port_busy(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _self_signed(directory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(directory, "server.crt")
    key_path = os.path.join(directory, "server.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    os.chmod(cert_path, 0o644)
    os.chmod(key_path, 0o600)
    if os.geteuid() == 0:
        shutil.chown(key_path, "postgres", "postgres")
        shutil.chown(cert_path, "postgres", "postgres")
    return cert_path, key_path


def _tls_connect_db(dbname="postgres"):
    conn = psycopg2.connect(host="127.0.0.1", port=TLS_PGPORT, user="postgres", dbname=dbname,
                            connect_timeout=10)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="module")
def tls_cluster():
    # another run of this module (or anything else) may hold the ports: wait for them
    deadline = time.monotonic() + 120
    while _port_busy(TLS_PGPORT) or _port_busy(TLS_PORT):
        if time.monotonic() > deadline:
            pytest.fail(f"ports {TLS_PGPORT} / {TLS_PORT} stayed busy for 120 s")
        time.sleep(1)

    tmp = tempfile.mkdtemp(prefix="plank-sec-tls-")
    os.chmod(tmp, 0o755)
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    data = os.path.join(tmp, "data")
    logfile = os.path.join(tmp, "server.log")
    www = os.path.join(tmp, "www")
    os.mkdir(www)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("<!doctype html><title>plank tls</title>")
    os.chmod(www, 0o755)
    os.chmod(os.path.join(www, "index.html"), 0o644)
    cert, key = _self_signed(tmp)
    started = False
    try:
        r = as_postgres(os.path.join(PGBIN, "initdb"), "-D", data, "-A", "trust", "-U", "postgres",
                        "--encoding=UTF8", "--locale=C.UTF-8", "-N")
        assert r.returncode == 0, r.stdout + r.stderr
        # the same library settings as the main test cluster
        preload = sql("SHOW shared_preload_libraries")[0][0]
        libpath = sql("SHOW dynamic_library_path")[0][0]
        conf = f"""
listen_addresses = '127.0.0.1'
port = {TLS_PGPORT}
unix_socket_directories = '{tmp}'
fsync = off
synchronous_commit = off
shared_preload_libraries = '{preload}'
dynamic_library_path = '{libpath}'
plank.database = 'postgres'
plank.port = {TLS_PORT}
plank.listen_addresses = '127.0.0.1'
plank.static_dir = '{www}'
plank.ssl = on
plank.ssl_cert_file = '{cert}'
plank.ssl_key_file = '{key}'
plank.anonymous_role = 'postgres'
plank.allow_privileged_roles = on
plank.log_connections = on
"""
        conf_path = os.path.join(data, "postgresql.conf")
        with open(conf_path, "a") as f:
            f.write(conf)
        r = as_postgres(PGCTL, "-D", data, "-l", logfile, "-w", "-t", "60", "start")
        started = True
        assert r.returncode == 0, r.stdout + r.stderr + _read(logfile)

        conn = _tls_connect_db()
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS plank")
            cur.execute("CREATE ROLE plank_authenticator LOGIN NOINHERIT")
            cur.execute("GRANT postgres TO plank_authenticator")
            cur.execute("CREATE TABLE public.tls_items (id int PRIMARY KEY, name text)")
            cur.execute("SELECT plank.track('public.tls_items')")
        ctx = ssl.create_default_context(cafile=cert)
        # the worker is up once a wss:// client gets its welcome
        deadline = time.monotonic() + 30
        last = None
        while True:
            try:
                async def hello():
                    c = await _open(ctx)
                    await c.close()
                run(hello(), timeout=10)
                break
            except Exception as e:   # not listening yet
                last = e
                assert time.monotonic() < deadline, \
                    f"no wss:// welcome within 30 s: {last!r}\n{_read(logfile)[-3000:]}"
                time.sleep(0.3)
        yield {"conn": conn, "ctx": ctx, "cert": cert, "log": logfile}
        conn.close()
    finally:
        if started and os.path.exists(os.path.join(data, "postmaster.pid")):
            r = as_postgres(PGCTL, "-D", data, "stop", "-m", "fast", "-w", "-t", "60")
            if r.returncode != 0:
                as_postgres(PGCTL, "-D", data, "stop", "-m", "immediate", "-w", "-t", "60")
        shutil.rmtree(tmp, ignore_errors=True)


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


async def _open(ctx, url=None, timeout=10):
    ws = await asyncio.wait_for(
        websockets.connect(url or f"wss://127.0.0.1:{TLS_PORT}/ws", ssl=ctx, max_size=None,
                           ping_interval=None, close_timeout=2, open_timeout=timeout),
        timeout)
    raw = await asyncio.wait_for(ws.recv(), timeout)
    welcome = json.loads(raw)
    assert welcome["type"] == "welcome", welcome
    return Client(ws, welcome)


def test_wss_welcome_and_change(tls_cluster):
    async def body():
        c = await _open(tls_cluster["ctx"])
        try:
            assert c.welcome.get("role") == "postgres", c.welcome
            assert c.ws.transport.get_extra_info("ssl_object") is not None
            await c.subscribe("s", table="public.tls_items")
            with tls_cluster["conn"].cursor() as cur:
                cur.execute("INSERT INTO public.tls_items VALUES (1, 'over-tls')")
            m = await c.next_push("s")
            assert m["change"]["new"] == {"id": 1, "name": "over-tls"}, m
        finally:
            await c.close()
    run(body())


def test_wss_by_host_name_checks_the_certificate(tls_cluster):
    async def body():
        c = await _open(tls_cluster["ctx"], url=f"wss://localhost:{TLS_PORT}/ws")
        await c.close()
    run(body())


def test_untrusted_certificate_is_rejected_by_a_verifying_client(tls_cluster):
    async def body():
        with pytest.raises(ssl.SSLCertVerificationError):
            await _open(ssl.create_default_context())   # the system CAs only
    run(body())


def test_plain_ws_to_the_tls_port_fails(tls_cluster):
    async def body():
        with pytest.raises((websockets.InvalidHandshake, websockets.ConnectionClosed, OSError,
                            asyncio.TimeoutError, EOFError)):
            ws = await asyncio.wait_for(
                websockets.connect(f"ws://127.0.0.1:{TLS_PORT}/ws", ping_interval=None,
                                   close_timeout=2, open_timeout=5), 6)
            try:
                await asyncio.wait_for(ws.recv(), 5)
            finally:
                await ws.close()
    run(body())
    # and the worker still serves wss:// afterwards
    async def again():
        c = await _open(tls_cluster["ctx"])
        await c.close()
    run(again())


def test_old_tls_versions_are_refused(tls_cluster):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(tls_cluster["cert"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, AttributeError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.0/1.1")
    try:
        with socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                version = t.version()
    except (ssl.SSLError, OSError):
        return
    pytest.fail(f"the server negotiated {version}")


def test_https_static_page(tls_cluster):
    import urllib.request
    with urllib.request.urlopen(f"https://127.0.0.1:{TLS_PORT}/", context=tls_cluster["ctx"],
                                timeout=10) as resp:
        assert resp.status == 200
        assert b"plank tls" in resp.read()
