"""The rule sets' pacing fields in the live loop: the abandon cap and window, and the
ring time (issue 12).

- The rule set of the campaign's region (the campaign's ``region``: the region the
  hopper's rules context takes for numbers written without a country code, see
  ``rules.service.load_context``) gives the predictive policy its abandon cap,
  min(campaign ``abandon_target``, rule set ``abandon_max_rate``), and its window,
  ``abandon_window_hours``. The window starts with the campaign's live answers and
  abandons already in it, counted from the CDRs by ``dialer.abandons`` (so a restart
  does not forget it); the live summary's window (``AbandonWindow``) starts from the
  same counts, by minute.
- Each call rings max(the dialer's ring timeout, ``ring_min_seconds`` of the rule set
  that passed the lead). The lead's verdict names that version ("GB@2"); versions
  are immutable, so each is read once: those in force when the loop starts, and a
  version first met later (a rule set edited while the loop runs) with the claim
  that brings it, on the store's thread (``PacingRules.preload``; one small read per
  new version). If that read failed, the dial tries once more on its own thread, and
  if that fails too the call rings the longest ring timeout allowed (300 s): never
  shorter than the rule set may ask.

A region without a rule set leaves the campaign's own target and the policy's default
window (720 h): the hopper dials nothing there anyway (NO-RULESET).
"""

from dataclasses import dataclass, field

from twisted.logger import Logger

from core.errors import DialerError, InputError

from .abandons import AbandonWindow, window_minutes
from .calls import RING_TIMEOUT_MAX_S

log = Logger(namespace="dialer.jurisdiction")

DEFAULT_WINDOW_HOURS = 720.0  # the policy's own default: US-ABANDON's 30 days


@dataclass
class PacingRules:
    """What one campaign's loop takes from the rule sets (build it with
    :func:`pacing_rules`, or :func:`pacing_from` without a store)."""

    ruleset: object  # label of the campaign's rule set ("GB@2"), or None
    cap: float  # the abandon cap of the policy
    window_hours: float
    minutes: list = field(default_factory=list)  # [(minute start s, live answers, abandons)] at the start
    rings: dict = field(default_factory=dict)  # rule-set label -> ring_min_seconds
    load: object = None  # label -> CompiledRuleSet, for versions first met while running

    @property
    def history(self):
        """(live answers, abandons) in the window at the start."""
        return (sum(m[1] for m in self.minutes), sum(m[2] for m in self.minutes))

    def window(self):
        """The live summary's abandon window, starting from the CDRs' counts."""
        return AbandonWindow(self.window_hours, self.minutes)

    def preload(self, labels, load):
        """Read the ring minima of the versions among ``labels`` not known yet, with
        ``load`` (label -> CompiledRuleSet): the live loop calls this on the store's
        thread with each claim, so a dial on the reactor thread finds them known. A
        version that cannot be read is left unknown (``ring_timeout_s`` decides)."""
        for label in set(labels) - set(self.rings) - {None}:
            try:
                self.rings[label] = load(label).ring_min_seconds
            except (DialerError, ValueError) as e:
                log.warn("rule set {label} not read ({err})", label=label, err=str(e))

    def ring_minimum(self, label):
        """``ring_min_seconds`` of the rule-set version ``label`` (read once)."""
        if label not in self.rings:
            if self.load is None:
                raise InputError(f"rule set {label} is not known to this loop")
            self.rings[label] = self.load(label).ring_min_seconds
        return self.rings[label]

    def ring_timeout_s(self, base_s, verdict):
        """The ring timeout of a call: max(``base_s``, the ring minimum of the rule set
        named by ``verdict`` (a rules.engine.Verdict or its summary dict); without a
        name, the campaign's rule set's)."""
        label = verdict.get("ruleset") if isinstance(verdict, dict) else getattr(verdict, "ruleset", None)
        label = label or self.ruleset
        if label is None:
            return base_s
        try:
            return max(base_s, self.ring_minimum(label))
        except (DialerError, ValueError) as e:
            log.error("rule set {label} not read ({err}): the call rings {s} s, the longest allowed",
                      label=label, err=str(e), s=RING_TIMEOUT_MAX_S)
            return max(base_s, RING_TIMEOUT_MAX_S)


def campaign_ruleset(rulesets, region):
    """The rule set covering ``region`` among ``rulesets`` (jurisdiction -> rule set), or None."""
    region = (region or "").upper()
    return next((rs for rs in rulesets.values() if region in rs.regions), None)


def pacing_from(campaign, ruleset, rulesets=(), minutes=(), load=None):
    """PacingRules of ``campaign`` (its row) under its rule set ``ruleset`` (a
    CompiledRuleSet or None); ``rulesets``: every rule set in force (their ring minima)."""
    cap = float(campaign["abandon_target"])
    window = DEFAULT_WINDOW_HOURS
    label = None
    if ruleset is not None:
        cap = min(cap, float(ruleset.abandon_max_rate))
        window = float(ruleset.abandon_window_hours)
        label = ruleset.label
    rings = {rs.label: rs.ring_min_seconds for rs in list(rulesets) + ([ruleset] if ruleset is not None else [])}
    return PacingRules(ruleset=label, cap=cap, window_hours=window, minutes=list(minutes),
                       rings=rings, load=load)


def load_version(store, label):
    """The compiled rule-set version ``label`` ("GB@2") from the store."""
    from rules.ruleset import validate
    from rules.service import show_ruleset
    jur, _, version = str(label).rpartition("@")
    if not jur or not version.isdigit():
        raise InputError(f"{label!r} is not a rule-set version (JURISDICTION@N)")
    row = show_ruleset(store, jur, int(version))
    return validate(row["data"], version=row["version"])


def pacing_rules(store, campaign, now):
    """PacingRules of ``campaign`` (its row) at ``now`` (an aware datetime): its rule
    set in force, and the window's counts from its CDRs. Without a store (the
    simulator): the campaign's own target and the default window, empty."""
    if store is None:
        return pacing_from(campaign, None)
    from rules.service import load_rulesets
    rulesets = load_rulesets(store)
    rs = campaign_ruleset(rulesets, campaign["region"])
    hours = float(rs.abandon_window_hours) if rs is not None else DEFAULT_WINDOW_HOURS
    minutes = window_minutes(store, campaign["id"], now, hours)
    return pacing_from(campaign, rs, rulesets.values(), minutes, load=lambda label: load_version(store, label))
