"""The browser: a web application served by the dialer's own Twisted reactor
(issue 14). Thin handlers over the library functions the CLI calls; see docs/web.md."""
