"""The web server on the reactor: ``dialer web`` alone, ``dialer run --web PORT`` beside
the dialer (the same reactor; the web's store threads are its own)."""

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


def listen(reactor, db_path, port=8080, host="127.0.0.1", **kw):
    """Serve the application on ``host:port`` (port 0: any free port); the listening port.
    A port that cannot be had raises ``CannotListenError`` with the store threads stopped
    (else they would keep the process from exiting)."""
    site = make_site(reactor, db_path, **kw)
    try:
        return reactor.listenTCP(port, site, interface=host)
    except Exception:
        site.web.stores.stop()
        raise


def serve(db_path, echo, port=8080, host="127.0.0.1"):
    """``dialer web``: serve until SIGINT/SIGTERM."""
    import sys

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    p = listen(reactor, db_path, port, host)
    # webhooks: the outbox's deliveries, claimed and recorded on the web's write thread (``dialer run --web``
    # does not come here: the dialer's service runs them there)
    from dialer.webhooks import Deliverer
    hooks = Deliverer(reactor, p.factory.web.stores.write).start()
    reactor.addSystemEventTrigger("before", "shutdown", hooks.stop)
    addr = p.getHost()
    echo(f"== web: http://{addr.host}:{addr.port}/ (Ctrl-C stops)")
    reactor.run()
