"""The dialer loop's own rules on an injected clock, with a recording stand-in for the
SIP pool (the real pool is exercised in test_engine_sip.py): line capacity and the
calls-per-second cap are never exceeded, and the rules engine is asked at dial time."""

import datetime as _dt

import pytest
from twisted.internet import task

from campaigns.leads import import_list
from campaigns.store import add_number, change_state, create_account, create_campaign
from dialer.engine import Dialer
from dialer.store import Store
from rules import service
from sip_harness import write_tone

T0 = _dt.datetime(2026, 11, 24, 17, 0, tzinfo=_dt.timezone.utc)  # noon in New York, a Tuesday


class FakePool:
    def __init__(self):
        self.dials = []  # (time, key, uri)
        self.hangups = []
        self.clock = None

    def dial(self, key, uri, **fields):
        self.dials.append((self.clock.seconds(), key, uri))
        return 5060

    def hangup(self, key, code=None):
        self.hangups.append(key)


@pytest.fixture
def dialer(tmp_path):
    store = Store(tmp_path / "d.db")
    service.ensure_defaults(store, T0)
    reg = tmp_path / "reg.txt"
    reg.write_text("2125550199\n")
    service.import_dnc(store, reg, T0, "t", source="national", as_of="2026-11-20")
    create_account(store, "acme", T0, "t", connection="gshdsl", lines=10)
    add_number(store, "acme", "212 555 9999", T0, "t")
    create_campaign(store, "c", "acme", T0, "t", caller_id="212-555-9999", greeting=write_tone(tmp_path / "g.wav"),
                    dial_mode="power", power_ratio="3")
    f = tmp_path / "list.csv"
    # 300 numbers, spaced so that no two are a multi-line run; one on the national DNC list
    f.write_text("phone\n2125550199\n" + "\n".join(f"212555{1000 + 29 * i:04d}" for i in range(300)) + "\n")
    import_list(store, f, "c", T0, "t")
    change_state(store, "c", "start", T0, "t")
    clock = task.Clock()
    clock.advance(T0.timestamp())
    pool = FakePool()
    pool.clock = clock
    d = Dialer(clock, store, "c", pool, route=lambda n: f"sip:{n[1:]}@carrier", tick=0.1, cps=4)
    for uid in range(1, 9):  # 8 agents ready (the floor directly: no SIP here)
        d.floor.login(uid, d.cid, d.now())
    return d, clock, pool, store


def test_line_capacity_and_cps_cap(dialer):
    d, clock, pool, store = dialer
    d.start()
    for _ in range(300):  # 30 s of the loop, nobody answers
        clock.advance(0.1)
        assert len(d.legs) <= d.lines == 10  # power 3 x 8 agents wants 24: the account has 10 lines
    # never more than 4 new calls in any second
    times = [t for t, _, _ in pool.dials]
    for t in times:
        assert sum(1 for u in times if t <= u < t + 1.0) <= 4
    assert len(pool.dials) == 10  # lines full, nothing ends: no more dials
    assert all(d.legs[k].verdict["allowed"] and d.legs[k].ruleset == "US@1" for _, k, _ in pool.dials)
    # the number on the national DNC list was never dialled
    assert not [u for _, _, u in pool.dials if "2125550199" in u]
    assert store.query_one("SELECT status FROM leads WHERE phone = '+12125550199'")["status"] == "blocked"


def test_rules_change_between_screening_and_dial_time(dialer):
    """A number put on the company DNC list after import is not dialled: the hopper asks
    the rules engine at the instant of each dial."""
    d, clock, pool, store = dialer
    first = store.query_one("SELECT phone FROM leads WHERE status = 'new' ORDER BY priority, id")["phone"]
    service.add_dnc(store, [first], d.now(), "t", reason="asked on another campaign")
    d.start()
    clock.advance(1.0)
    assert pool.dials and not [u for _, _, u in pool.dials if first[1:] in u]
