import datetime as dt
import json
import pathlib

import pytest
import pytz

from core.store import Store
from rules.engine import Context, DncLists, Registry
from rules.ruleset import validate

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULTS = ROOT / "rules" / "defaults"


def local(text, zone):
    """'2026-11-27 13:00' in ``zone`` -> aware UTC datetime (DST resolved by the zone db)."""
    naive = dt.datetime.strptime(text, "%Y-%m-%d %H:%M")
    return pytz.timezone(zone).localize(naive, is_dst=None).astimezone(dt.timezone.utc)


def default_data(j):
    return json.loads((DEFAULTS / f"{j}.json").read_text())


@pytest.fixture(scope="session")
def rulesets():
    return {j: validate(default_data(j), version=1) for j in ("US", "GB", "TR")}


class FakeSet(frozenset):
    """A stand-in registry for engine unit tests (the real NumberSet is tested apart)."""


def make_ctx(rulesets, registry_as_of=dt.date(2026, 11, 20), registry=(), **kw):
    regs = {}
    if registry_as_of is not None:
        regs = {"US": Registry("US", registry_as_of, FakeSet(registry)),
                "GB": Registry("GB", registry_as_of, FakeSet(registry))}
    dnc = kw.pop("dnc", None) or DncLists(registries=regs)
    return Context(rulesets=rulesets, dnc=dnc, **kw)


@pytest.fixture
def ctx(rulesets):
    return make_ctx(rulesets)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "dialer.db"


@pytest.fixture
def store(db_path):
    s = Store(db_path)
    yield s
    s.close()


@pytest.fixture
def sipp(tmp_path):
    """Start SIPp peers (``sipp(scenario, *args, **kw)``: see tests/sip_harness.Sipp);
    all are stopped after the test."""
    from sip_harness import Sipp
    peers = []

    def start(scenario, *extra, **kw):
        s = Sipp(scenario, *extra, tmp=tmp_path, **kw)
        peers.append(s)
        return s
    yield start
    for s in peers:
        s.stop()
