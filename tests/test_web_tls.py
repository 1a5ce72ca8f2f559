"""The web application over TLS: ``dialer web --tls-cert/--tls-key`` serves HTTPS (the
client verifies the certificate), the session cookie then carries ``Secure`` (besides
``HttpOnly`` and ``SameSite``) and every answer ``Strict-Transport-Security``; a bad
certificate or key file is one clear message and nothing listens."""

import datetime as dt
import http.client
import re
import ssl

import pytest
from click.testing import CliRunner

import cli

from web_harness import Client, Server, seed


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsServer(Server):
    """``dialer web --port 0 --tls-cert C --tls-key K``; connections verify C."""

    def __init__(self, db_path, cert, key):
        super().__init__(db_path, ("--tls-cert", str(cert), "--tls-key", str(key)), scheme="https")
        self.ctx = ssl.create_default_context(cafile=str(cert))

    def connect(self):
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.ctx)


def test_https_session_cookie_is_secure(tmp_path):
    db = tmp_path / "dialer.db"
    seed(db)
    cert, key = _self_signed(tmp_path)
    server = TlsServer(db, cert, key)
    try:
        c = Client(server)
        r = c.get("/login")
        assert r.status == 200 and r.header("strict-transport-security") == "max-age=31536000"
        r = c.login("acme", "olive")
        assert r.status == 303, r.text
        session = [h for h in c.set_cookie_headers if h.startswith("dialer_session=")]
        assert session and all(re.search(r";\s*Secure", h, re.I) for h in session), session
        assert all(re.search(r";\s*HttpOnly", h, re.I) and re.search(r"SameSite=Lax", h, re.I) for h in session)
        assert c.get("/campaigns").status == 200
        # a client that does not trust the certificate cannot talk to it
        bad = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10, context=ssl.create_default_context())
        with pytest.raises(ssl.SSLError):
            bad.request("GET", "/login")
    finally:
        server.stop()


def test_plain_http_cookie_is_not_secure_and_no_hsts(tmp_path):
    db = tmp_path / "dialer.db"
    seed(db)
    server = Server(db)
    try:
        c = Client(server)
        assert c.get("/login").header("strict-transport-security") is None
        assert c.login("acme", "olive").status == 303
        session = [h for h in c.set_cookie_headers if h.startswith("dialer_session=")]
        assert session and not any(re.search(r";\s*Secure", h, re.I) for h in session)
    finally:
        server.stop()


@pytest.mark.parametrize("args, message", [
    (["--tls-cert", "{missing}"], "--tls-cert"),
    (["--tls-cert", "{garbage}"], "not a PEM certificate"),
    (["--tls-cert", "{cert}", "--tls-key", "{other_key}"], "not a PEM certificate and its private key"),
    (["--tls-key", "{key}"], "--tls-key needs --tls-cert"),
])
def test_bad_certificate_files_are_one_clear_message(tmp_path, args, message):
    cert, key = _self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = _self_signed(other)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    files = {"missing": tmp_path / "nope.pem", "garbage": garbage, "cert": cert, "key": key, "other_key": other_key}
    argv = [a.format(**files) for a in args]
    r = CliRunner().invoke(cli.main, ["--db", str(tmp_path / "d.db"), "web", "--port", "0", *argv])
    assert r.exit_code != 0
    assert message in r.output and "Traceback" not in r.output, r.output
