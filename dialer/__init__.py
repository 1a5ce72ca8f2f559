"""The dialer: store, clock and (later) pacing, SIP workers and the reactor wiring."""
