"""The web server on the reactor: ``dialer web`` alone, ``dialer run --web PORT`` beside
the dialer (the same reactor; the web's store threads are its own)."""

import pathlib

from twisted.web import server

from .app import WebApp
from .db import Stores

# Sent with every answer, pages and files alike.
SECURITY_HEADERS = (
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                                 b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


class Request(server.Request):
    def process(self):
        for name, value in SECURITY_HEADERS:
            self.setHeader(name, value)
        if self.isSecure():
            self.setHeader(b"strict-transport-security", b"max-age=31536000")
        super().process()


def make_site(reactor, db_path, **kw):
    """The twisted.web Site of the application on ``reactor``, its store threads started."""
    stores = Stores(reactor, db_path)
    web = WebApp(reactor, stores, **kw)
    site = server.Site(web.app.resource())
    site.requestFactory = Request
    site.displayTracebacks = False
    site.web = web
    return site


def tls_options(cert_path, key_path=None):
    """The TLS context of ``--tls-cert FILE [--tls-key FILE]``: a PEM certificate (chain)
    and its private key (in the same file when ``key_path`` is None). A missing,
    unreadable or mismatched file is one InputError naming it; nothing listens."""
    from twisted.internet import ssl

    from core.errors import InputError
    try:
        cert_pem = pathlib.Path(cert_path).read_bytes()
    except OSError as e:
        raise InputError(f"--tls-cert {cert_path}: {e.strerror or e}") from None
    try:
        key_pem = pathlib.Path(key_path).read_bytes() if key_path else cert_pem
    except OSError as e:
        raise InputError(f"--tls-key {key_path}: {e.strerror or e}") from None
    try:
        cert = ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
        chain = [ssl.Certificate.loadPEM(c).original for c in _pem_certs(cert_pem)[1:]]
        return ssl.CertificateOptions(privateKey=cert.privateKey.original, certificate=cert.original,
                                      extraCertChain=chain or None)
    except Exception as e:  # OpenSSL's errors: not a PEM certificate, not its key
        raise InputError(f"--tls-cert/--tls-key: not a PEM certificate and its private key ({e})") from None


def _pem_certs(pem):
    marker = b"-----BEGIN CERTIFICATE-----"
    return [marker + part for part in pem.split(marker)[1:]]


def listen(reactor, db_path, port=8080, host="127.0.0.1", tls=None, **kw):
    """Serve the application on ``host:port`` (port 0: any free port); the listening port.
    ``tls``: the options of :func:`tls_options` to serve HTTPS (session cookies then
    carry ``Secure``, answers ``Strict-Transport-Security``).
    A port that cannot be had raises ``CannotListenError`` with the store threads stopped
    (else they would keep the process from exiting)."""
    site = make_site(reactor, db_path, **kw)
    try:
        if tls is not None:
            listening = reactor.listenSSL(port, site, tls, interface=host)
        else:
            listening = reactor.listenTCP(port, site, interface=host)
    except Exception:
        site.web.stores.stop()
        raise
    listening.web = site.web  # the application (its stores, its hub), TLS or not (TLS wraps the factory)
    return listening


def url(port, tls=None):
    """``http(s)://host:port/`` of a listening port."""
    addr = port.getHost()
    return f"{'https' if tls is not None else 'http'}://{addr.host}:{addr.port}/"


def serve(db_path, echo, port=8080, host="127.0.0.1", tls=None):
    """``dialer web``: serve until SIGINT/SIGTERM (HTTPS with ``tls``)."""
    import sys

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    p = listen(reactor, db_path, port, host, tls=tls)
    # webhooks: the outbox's deliveries, claimed and recorded on the web's write thread (``dialer run --web``
    # does not come here: the dialer's service runs them there)
    from dialer.webhooks import Deliverer
    hooks = Deliverer(reactor, p.web.stores.write).start()
    reactor.addSystemEventTrigger("before", "shutdown", hooks.stop)
    echo(f"== web: {url(p, tls)} (Ctrl-C stops)")
    reactor.run()
