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
    from campaigns.screening import screen_file

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
    _campaign(store, now, echo, samples)
    return s


def _tone_wav(path, seconds=1.0, rate=8000):
    import math
    import struct
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(rate * seconds))))
    return path


def _campaign(store, now, echo, samples):
    import datetime as _dt
    from campaigns.dryrun import dry_run
    from campaigns.leads import import_list
    from campaigns.store import add_number, change_state, create_account, create_campaign
    create_account(store, "demo", now, "demo", connection="gshdsl", lines=10)
    add_number(store, "demo", "+1 212 555 0000", now, "demo")
    greeting = _tone_wav(store.files_dir / "demo-greeting.wav")
    create_campaign(store, "demo", "demo", now, "demo", caller_id="+1 212 555 0000", greeting=greeting,
                    hours="mon-sat=09:00-20:00;sun=")
    echo("== campaign demo (account demo, G.SHDSL 10 lines, predictive, caller ID +12125550000)")
    out = import_list(store, samples / "leads.csv", "demo", now, "demo")
    echo(f"  list import {out['import_id']}: {out['rows']} rows, {out['imported']} imported, "
         f"{out['rejected']} rejected, {out['duplicates']} duplicates")
    for reason, n in out["rejected_by_reason"].items():
        echo(f"    rejected {n}: {reason}")
    p = out["preview"]
    echo(f"  preview: dialable now {p['dialable_now']}, later today {p['later_today']}, later {p['later']}, "
         f"never {p['never']}; multi-line groups {p['multiline_groups']}")
    change_state(store, "demo", "start", now, "demo")
    run = dry_run(store, "demo", now.replace(minute=0, second=0, microsecond=0),
                  now.replace(minute=0, second=0, microsecond=0) + _dt.timedelta(hours=24), now)
    echo("  dry run, next 24 h (UTC hour: dialable leads):")
    echo("    " + "  ".join(f"{h['at'][11:13]}h:{h['dialable']}" for h in run["hours"]))

