"""Accounts are the boundary (issue 10): two accounts with the same user name, the
same campaign name and the same opt-out see nothing of each other; call attempts come
only from calls that were placed; agents get their PINs from the CLI; the audit log
records who acted, from the process's login."""

import datetime as dt
import json
import wave

import pytest
from click.testing import CliRunner

from campaigns.hopper import Hopper
from campaigns.leads import find_leads, import_list, manual_outcome, schedule_callback
from campaigns.store import (add_number, add_user, change_state, create_account, create_campaign, get_campaign,
                             list_campaigns, resolve_account)
from cli import login_name, main
from dialer.agents import verify_pin
from dialer.cdr import Cdr, list_cdrs, write_cdr
from core.errors import InputError, NotFound
from core.timeutil import to_ms
from core import audit
from rules import service

T0 = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)  # Tuesday 12:00 in New York and Miami
MIAMI = "+13055550100"
NY = "+12125550100"


def wav(path):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\x00" * 1600)
    return path


@pytest.fixture
def two(store, tmp_path):
    """acme and beta: each a user alice, a number, a running campaign 'spring' with the
    same two leads; acme's customer at NY opted out (acme's company list)."""
    service.ensure_defaults(store, T0)
    reg = tmp_path / "reg.txt"
    reg.write_text("2125550199\n")
    service.import_dnc(store, reg, T0, "t", source="national", as_of="2026-11-20")
    out = {}
    for k, name in enumerate(("acme", "beta")):
        acc = create_account(store, name, T0, "t")
        add_user(store, name, "alice", "agent", T0, "t")
        add_number(store, name, f"+1 212 555 900{k}", T0, "t")
        camp = create_campaign(store, "spring", name, T0, "t", caller_id=f"+1 212 555 900{k}",
                               greeting=wav(tmp_path / "g.wav"))
        f = tmp_path / f"{name}.csv"
        f.write_text(f"phone\n{NY}\n{MIAMI}\n")
        import_list(store, f, camp["id"], T0, "t")
        change_state(store, "spring", "start", T0, "t", account=name)
        out[name] = {"account_id": acc["id"], "campaign_id": camp["id"],
                     "leads": {r["phone"]: r["id"] for r in store.query(
                         "SELECT id, phone FROM leads WHERE campaign_id = ?", (camp["id"],))}}
    service.add_dnc(store, [NY], T0, "t", account="acme", reason="asked on a call")
    return out


def placed(store, two, name, phone, call_id, at, outcome="no-answer"):
    """A call the dialer placed, through the CDR path (the only writer of attempts)."""
    a = two[name]
    start = to_ms(at)
    cdr = Cdr(call_id=call_id, account_id=a["account_id"], destination=phone, started_ms=start,
              ended_ms=start + 20_000, disposition=outcome, sip_code=480, sip_reason="Temporarily Unavailable",
              hangup_cause="NO_ANSWER", hangup_by="dialer", lead_outcome=outcome, campaign_id=a["campaign_id"],
              lead_id=a["leads"][phone], duration_ms=20_000, ring_ms=20_000)
    return write_cdr(store, cdr, at + dt.timedelta(seconds=20))


def rules_of(verdict):
    return [r.rule for r in verdict.reasons]


def test_one_accounts_opt_out_does_not_block_another(store, two):
    # by campaign name within the account, by campaign id, by account
    acme = service.check_numbers(store, [NY], T0, campaign="spring", account="acme")[0]
    beta = service.check_numbers(store, [NY], T0, campaign="spring", account="beta")[0]
    assert "DNC-COMPANY" in rules_of(acme) and not acme.allowed
    assert beta.allowed, rules_of(beta)
    assert service.check_numbers(store, [NY], T0, campaign=two["beta"]["campaign_id"])[0].allowed
    assert not service.check_numbers(store, [NY], T0, account="acme")[0].allowed
    assert service.check_numbers(store, [NY], T0, account=two["beta"]["account_id"])[0].allowed
    assert [r["listed"] for r in service.check_dnc(store, [NY], T0, account="beta")] == [False]
    # the hoppers (by id, as the live dialer passes it, and by row): beta dials it, acme never does
    got = Hopper(store, two["beta"]["campaign_id"]).next_leads(10, T0, "b")
    assert NY in [row["phone"] for row, _ in got]
    got = Hopper(store, get_campaign(store, two["acme"]["campaign_id"])).next_leads(10, T0, "a")
    assert NY not in [row["phone"] for row, _ in got]
    assert store.query_one("SELECT status, disposition FROM leads WHERE id = ?",
                           (two["acme"]["leads"][NY],)) == {"status": "blocked", "disposition": "dnc"}


def test_an_opt_out_on_a_call_goes_to_the_leads_account(store, two):
    placed(store, two, "beta", MIAMI, "beta-1", T0, outcome="dnc-requested")
    assert not service.check_numbers(store, [MIAMI], T0, account="beta")[0].allowed
    assert service.check_numbers(store, [MIAMI], T0, account="acme")[0].allowed
    entries = audit.entries(store, action_prefix="dnc.add", account_id=two["beta"]["account_id"])
    assert [e["subject"] for e in entries] == [f"dnc:account:{two['beta']['account_id']}"]


def test_lists_show_only_the_accounts_rows(store, two):
    placed(store, two, "acme", MIAMI, "acme-1", T0)
    placed(store, two, "beta", MIAMI, "beta-1", T0)
    assert [r["call_id"] for r in list_cdrs(store, account="acme")] == ["acme-1"]
    assert [r["call_id"] for r in list_cdrs(store, campaign="spring", account="beta")] == ["beta-1"]
    assert [r["id"] for r in find_leads(store, MIAMI, account="acme")] == [two["acme"]["leads"][MIAMI]]
    assert [(c["name"], c["account"]) for c in list_campaigns(store, "acme")] == [("spring", "acme")]
    # without an account, several accounts: one clear error, never everybody's rows
    for call in (lambda: list_cdrs(store), lambda: find_leads(store, MIAMI), lambda: list_campaigns(store),
                 lambda: service.check_numbers(store, [MIAMI], T0)):
        with pytest.raises(InputError, match="several accounts .*acme, beta.*--account"):
            call()
    with pytest.raises(InputError, match="campaign 'spring' exists in several accounts \\(acme, beta\\)"):
        get_campaign(store, "spring")
    with pytest.raises(NotFound):
        get_campaign(store, two["beta"]["campaign_id"], account="acme")


def test_frequency_cap_counts_only_the_accounts_own_calls(store, two):
    # Florida: 3 calls in 24 h. acme calls the Miami number three times
    for i in range(3):
        placed(store, two, "acme", MIAMI, f"acme-{i}", T0 + dt.timedelta(minutes=i))
    at = T0 + dt.timedelta(minutes=30)
    acme = service.check_numbers(store, [MIAMI], at, campaign="spring", account="acme")[0]
    beta = service.check_numbers(store, [MIAMI], at, campaign="spring", account="beta")[0]
    assert "frequency" in [r.category for r in acme.reasons]
    assert beta.allowed, rules_of(beta)
    got = Hopper(store, two["beta"]["campaign_id"]).next_leads(10, at, "b")
    assert MIAMI in [row["phone"] for row, _ in got]
    assert {r["account_id"] for r in store.query("SELECT account_id FROM call_attempts")} == {two["acme"]["account_id"]}


def test_callbacks_are_not_call_attempts(store, two):
    lead = two["beta"]["leads"][MIAMI]
    for day in (25, 26, 27):
        out = schedule_callback(store, lead, f"2026-11-{day} 10:00", T0, "t", account="beta")
        assert out["status"] == "callback" and out["attempts"] == 0
    assert store.query("SELECT * FROM call_attempts") == []
    due = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)  # 10:00 in Miami
    v = service.check_numbers(store, [MIAMI], due, campaign="spring", account="beta")[0]
    assert v.allowed, rules_of(v)  # Florida's 3-in-24 h cap is not tripped by scheduling
    got = Hopper(store, two["beta"]["campaign_id"]).next_leads(1, due, "b")
    assert [row["phone"] for row, _ in got] == [MIAMI]


def test_a_manual_outcome_is_not_a_call_unless_it_names_one(store, two):
    lead = two["acme"]["leads"][MIAMI]
    out = manual_outcome(store, lead, "busy", T0, "t", account="acme")
    assert out["status"] == "retry" and out["call_attempt"] is False
    assert store.query("SELECT * FROM call_attempts") == []
    with pytest.raises(NotFound, match="no call record 'made-up'"):
        manual_outcome(store, lead, "busy", T0, "t", call_id="made-up", account="acme")
    placed(store, two, "beta", MIAMI, "beta-1", T0)  # another account's call cannot be claimed
    with pytest.raises(NotFound, match="no call record 'beta-1'"):
        manual_outcome(store, lead, "busy", T0, "t", call_id="beta-1", account="acme")
    with pytest.raises(NotFound, match="no lead"):
        manual_outcome(store, lead, "busy", T0, "t", account="beta")
    assert [r["call_id"] for r in store.query("SELECT call_id FROM call_attempts")] == ["beta-1"]


# --------------------------------------------------------------------------------- CLI

@pytest.fixture
def run(db_path):
    def _run(*args, env=None):
        return CliRunner().invoke(main, ["--db", str(db_path), *args], env=env, catch_exceptions=False)
    return _run


def lines(out):
    return [json.loads(x) for x in out.strip().splitlines()]


def test_cli_users_and_pins(run, store):
    assert run("account", "create", "acme").exit_code == 0
    r = run("account", "user", "alice", "--account", "acme", "--role", "agent", "--pin-env", "ALICE_PIN", "--json",
            env={"ALICE_PIN": "4821"})
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"account": "acme", "user": "alice", "role": "agent", "pin_set": True}
    assert verify_pin("4821", store.query_one("SELECT pin_hash FROM users WHERE name = 'alice'")["pin_hash"])
    # a missing or refused PIN: one error line, no user
    r = run("account", "user", "bob", "--account", "acme", "--role", "agent", "--pin-env", "BOB_PIN",
            env={"BOB_PIN": ""})
    assert r.exit_code == 1 and r.output == "Error: --pin-env BOB_PIN: that environment variable is not set or empty\n"
    r = run("account", "user", "bob", "--account", "acme", "--role", "agent", "--pin-env", "BOB_PIN",
            env={"BOB_PIN": "1234"})
    assert r.exit_code == 1 and r.output.startswith("Error: PIN too easy")
    assert store.query("SELECT name FROM users WHERE name = 'bob'") == []
    assert run("account", "user", "bob", "--account", "acme", "--role", "supervisor").exit_code == 0
    r = run("account", "pin", "bob", "--account", "acme", "--pin-env", "BOB_PIN", env={"BOB_PIN": "739164"})
    assert r.exit_code == 0 and r.output == "PIN of acme/bob set\n"
    r = run("account", "pin", "carol", "--pin-env", "BOB_PIN", env={"BOB_PIN": "739164"})
    assert r.exit_code == 1 and r.output == "Error: no user 'carol' in account 'acme'\n"
    r = run("account", "users", "acme", "--json")
    users = lines(r.output)
    assert [(u["name"], u["role"], u["pin_set"]) for u in users] == [("alice", "agent", True), ("bob", "supervisor", True)]
    assert all(set(u) == {"account", "name", "role", "pin_set", "created_at"} for u in users)
    assert "scrypt" not in r.output and "scrypt" not in run("account", "users").output
    actions = [(e["action"], e["account_id"]) for e in audit.entries(store) if e["action"].startswith("user.")]
    acme_id = resolve_account(store, "acme")["id"]
    assert actions == [("user.add", acme_id), ("user.add", acme_id), ("user.pin", acme_id)]


def test_cli_ambiguous_campaign_name_is_one_error_and_changes_nothing(run, store):
    for name in ("acme", "beta"):
        assert run("account", "create", name).exit_code == 0
        assert run("campaign", "create", "spring", "--account", name, "--mode", "preview").exit_code == 0
    head = audit.verify(store)["head"]
    for args in (("campaign", "finish", "spring"), ("campaign", "show", "spring"),
                 ("dnc", "add", "2125550100", "--campaign", "spring"),
                 ("check", "2125550100", "--campaign", "spring")):
        r = run(*args)
        assert r.exit_code == 1, args
        assert r.output == ("Error: campaign 'spring' exists in several accounts (acme, beta): "
                            "say which with --account NAME\n"), args
    r = run("dnc", "add", "2125550100")
    assert r.exit_code == 1 and r.output == ("Error: this installation has several accounts (acme, beta): "
                                             "say which with --account NAME\n")
    assert audit.verify(store)["head"] == head  # nothing was written
    assert {r["state"] for r in store.query("SELECT state FROM campaigns")} == {"draft"}
    assert store.query("SELECT * FROM dnc_entries") == []
    r = run("campaign", "finish", "spring", "--account", "beta", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["state"] == "finished"
    assert [r["state"] for r in store.query("SELECT state FROM campaigns ORDER BY account_id")] == ["draft", "finished"]


def test_cli_actor_is_the_login_and_an_existing_user(run, store):
    login = login_name()
    assert run("account", "create", "acme").exit_code == 0
    assert run("account", "user", "alice", "--account", "acme", "--role", "manager").exit_code == 0
    r = run("--user", "mallory", "number", "add", "+1 212 555 0000", "--account", "acme")
    assert r.exit_code == 1 and r.output.startswith("Error: --user mallory: no such user")
    r = run("number", "add", "+1 212 555 0000", "--account", "acme", env={"DIALER_USER": "acme/mallory"})
    assert r.exit_code == 1 and r.output == "Error: --user acme/mallory: no user 'mallory' in account 'acme'\n"
    assert store.query("SELECT * FROM account_numbers") == []
    assert run("--user", "acme/alice", "number", "add", "+1 212 555 0000", "--account", "acme").exit_code == 0
    assert run("--user", "alice", "campaign", "create", "spring").exit_code == 0  # USER alone: unique
    rows = audit.entries(store)
    assert [(e["action"], e["actor"]) for e in rows] == [
        ("account.create", f"cli:{login}"), ("user.add", f"cli:{login}"),
        ("number.add", f"cli:{login} as acme/alice"), ("campaign.create", f"cli:{login} as acme/alice")]
    # a second alice: the bare name is ambiguous
    assert run("account", "create", "beta").exit_code == 0
    assert run("account", "user", "alice", "--account", "beta", "--role", "agent").exit_code == 0
    r = run("--user", "alice", "campaign", "list", "--account", "acme")
    assert r.exit_code == 1 and "several accounts (acme, beta): write ACCOUNT/USER" in r.output
