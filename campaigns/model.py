"""Pure campaign and lead logic: states and their legal transitions, dial modes,
retry rules, and what an outcome does to a lead. No I/O, no clock."""

import datetime as _dt
import re
from dataclasses import dataclass

from core.errors import InputError

CAMPAIGN_STATES = ("draft", "running", "paused", "finished")
TRANSITIONS = {  # action -> (allowed from, to)
    "start": (("draft", "paused"), "running"),
    "pause": (("running",), "paused"),
    "finish": (("draft", "running", "paused"), "finished"),
}
DIAL_MODES = ("preview", "progressive", "predictive", "power")
CONNECTIONS = {"adsl": 3, "gshdsl": 10, "fiber": None}  # terms of service: max concurrent calls
ROLES = ("owner", "manager", "compliance", "supervisor", "agent")

# lead life cycle: where a lead is; ``disposition`` says how its last call ended
LEAD_STATUSES = ("staged", "new", "retry", "callback", "reserved", "dialing", "done", "dnc", "blocked")
OUTCOMES = ("answered-human", "machine", "busy", "no-answer", "failed", "abandoned", "dnc-requested", "callback",
            "invalid-number")

DEFAULT_RETRY = {
    "busy": {"delay_minutes": 20, "max_attempts": 5},
    "no-answer": {"delay_minutes": 120, "max_attempts": 5},
    "machine": {"delay_minutes": 240, "max_attempts": 3},
    "failed": {"delay_minutes": 60, "max_attempts": 3},
    "abandoned": {"delay_minutes": 60, "max_attempts": 5},
}
PRIORITY_CALLBACK, PRIORITY_FRESH, PRIORITY_RECYCLED = 0, 1, 2


def transition(state, action, name="campaign"):
    if action not in TRANSITIONS:
        raise InputError(f"unknown action {action!r}")
    allowed, to = TRANSITIONS[action]
    if state not in allowed:
        raise InputError(f"cannot {action} {name}: it is {state} (only a {' or '.join(allowed)} campaign can be {to if action != 'start' else 'started'})")
    return to


MAX_LINES = 1000  # concurrent calls of one account: far above what one dialer host carries


def check_capacity(connection, lines):
    if connection not in CONNECTIONS:
        raise InputError(f"connection must be one of {', '.join(CONNECTIONS)}")
    if not isinstance(lines, int) or isinstance(lines, bool) or not 1 <= lines <= MAX_LINES:
        raise InputError(f"--lines {lines}: line capacity must be a whole number from 1 to {MAX_LINES}")
    cap = CONNECTIONS[connection]
    if cap is not None and lines > cap:
        raise InputError(f"a {connection} connection carries at most {cap} concurrent calls (terms of service); asked {lines}")
    return lines


_DUR = re.compile(r"([0-9]{1,7})[ ]*(m|min|h|d)?", re.ASCII)
_COUNT = re.compile(r"[0-9]{1,7}", re.ASCII)
MIN_RETRY_MINUTES = 1
MAX_RETRY_MINUTES = 30 * 1440  # 30 days
MAX_ATTEMPTS = 20


def _shown(text, limit=60):
    text = str(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_retry(text):
    """'busy=20m/5,no-answer=2h/5' -> rules mapping (merged over the defaults). A delay
    is MIN_RETRY_MINUTES..MAX_RETRY_MINUTES, attempts 1..MAX_ATTEMPTS; InputError
    naming the rule otherwise."""
    rules = {k: dict(v) for k, v in DEFAULT_RETRY.items()}
    if not text:
        return rules
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            outcome, spec = part.split("=", 1)
            delay, attempts = spec.split("/", 1)
        except ValueError:
            raise InputError(f"--retry rule {_shown(part)}: write OUTCOME=DELAY/MAX_ATTEMPTS, e.g. busy=20m/5") from None
        outcome = outcome.strip()
        if outcome not in DEFAULT_RETRY:
            raise InputError(f"--retry rule {_shown(part)}: outcome must be one of {', '.join(DEFAULT_RETRY)}")
        m = _DUR.fullmatch(delay.strip())
        if not m:
            raise InputError(f"--retry rule {_shown(part)}: delay {_shown(delay.strip())} is not a duration "
                             f"(e.g. 20m, 2h, 1d)")
        minutes = int(m.group(1)) * {"m": 1, "min": 1, None: 1, "h": 60, "d": 1440}[m.group(2)]
        if not MIN_RETRY_MINUTES <= minutes <= MAX_RETRY_MINUTES:
            raise InputError(f"--retry rule {_shown(part)}: the delay must be between {MIN_RETRY_MINUTES} minute "
                             f"and {MAX_RETRY_MINUTES // 1440} days")
        if not _COUNT.fullmatch(attempts.strip()) or not 1 <= int(attempts) <= MAX_ATTEMPTS:
            raise InputError(f"--retry rule {_shown(part)}: max attempts must be a whole number from 1 to "
                             f"{MAX_ATTEMPTS}")
        rules[outcome] = {"delay_minutes": minutes, "max_attempts": int(attempts)}
    return rules


@dataclass(frozen=True)
class LeadChange:
    status: str
    disposition: str
    next_attempt_at: object  # datetime or None
    priority: int
    add_to_dnc: bool = False


def after_outcome(outcome, attempts, at, retry_rules, callback_at=None):
    """What a call outcome does to a lead that has now had ``attempts`` calls."""
    if outcome not in OUTCOMES:
        raise InputError(f"unknown outcome {outcome!r} (one of {', '.join(OUTCOMES)})")
    if outcome == "answered-human":
        return LeadChange("done", outcome, None, PRIORITY_FRESH)
    if outcome == "invalid-number":  # the network says the number does not exist: never again
        return LeadChange("done", outcome, None, PRIORITY_RECYCLED)
    if outcome == "dnc-requested":
        return LeadChange("dnc", outcome, None, PRIORITY_FRESH, add_to_dnc=True)
    if outcome == "callback":
        if callback_at is None:
            raise InputError("a callback needs its time")
        return LeadChange("callback", outcome, callback_at, PRIORITY_CALLBACK)
    rule = retry_rules.get(outcome) or DEFAULT_RETRY[outcome]
    if attempts >= rule["max_attempts"]:
        return LeadChange("done", outcome, None, PRIORITY_RECYCLED)
    return LeadChange("retry", outcome, at + _dt.timedelta(minutes=rule["delay_minutes"]), PRIORITY_RECYCLED)
