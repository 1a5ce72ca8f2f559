"""The embedded default: what `dialer demo` shows on a fresh machine.

For now: the shipped rule sets, a sample national DNC registry and an opt-out,
`check` on sample numbers, and the screening of a sample list. Later issues add
the campaign, the SIP carrier simulator and agents.
"""

import pathlib

from dialer.timeutil import utc

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "samples"
SAMPLE_NUMBERS = ("(212) 555-0142", "212-555-0150", "+1 305 555 0110", "911", "1-411", "1-800-222-1222",
                  "+1 208 555 0166", "401-555-0133", "555-CALL-NOW", "+44 20 7946 0000")


def run(store, now, echo, samples=SAMPLES):
    """Run the demo against ``store`` (a fresh database is best) and print with ``echo``."""
    from rules import service
    from rules.screening import screen_file

    now = utc(now)
    service.ensure_defaults(store, now)
    echo(f"== rule sets: {', '.join(sorted(service.load_rulesets(store)))} (shipped defaults, version 1)")
    out = service.import_dnc(store, samples / "national-dnc-sample.txt", now, "demo", source="national",
                             as_of=now.date().isoformat(), jurisdiction="US")
    echo(f"== national DNC registry (sample): {out['numbers']} numbers, {out['junk']} junk line(s) reported")
    service.add_dnc(store, ["212-555-0150"], now, "demo", reason="opted out on a call")
    echo("== company DNC: 212-555-0150 opted out")
    echo(f"== dialer check at {now:%Y-%m-%d %H:%M}Z")
    for v in service.check_numbers(store, SAMPLE_NUMBERS, now):
        d = v.as_dict()
        status = "ALLOWED" if d["allowed"] else "BLOCKED"
        local = "; ".join(f"{w['zone']} {w['local'][11:16]} window {', '.join(w['windows']) or 'none'}"
                          for w in d["window"])
        echo(f"  {d['input']:<18} {status:<8} {local}")
        for r in d["reasons"]:
            echo(f"      {r['category']}: {r['detail']}")
    echo(f"== screening {samples / 'leads.csv'}")
    s = screen_file(store, samples / "leads.csv", now)
    echo(f"  {s['leads']} leads: {s['allowed']} may be called now, {s['blocked']} blocked")
    for cat, n in s["blocked_by_category"].items():
        echo(f"    {cat:<17} {n}")
    echo(f"  multi-line groups: {s['multiline_groups']} ({s['multiline_leads']} leads; one live call per group)")
    return s
