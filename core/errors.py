"""Errors a user can hit: each has a stable id and one clear message."""


class DialerError(Exception):
    """Base for user-facing errors. ``code`` is stable; ``str(err)`` is the message."""

    code = "error"

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code


class InputError(DialerError):
    code = "bad-input"


class NotFound(DialerError):
    code = "not-found"


class StoreError(DialerError):
    code = "store-unavailable"


class StateError(DialerError):
    """An action the current state does not allow (the state is left unchanged)."""

    code = "bad-state"
