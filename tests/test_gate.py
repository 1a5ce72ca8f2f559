"""The account-wide gate, the agent sessions, the PIN back-off and the call ids: pure
objects, instants given by the test."""

import pytest

from core.errors import StateError
from dialer.gate import AccountGate, AgentSessions, LoginGuard, source_host
from dialer.ids import uuid7


def test_lines_are_per_account_across_keys():
    g = AccountGate()
    g.set_capacity(1, 3)
    g.set_capacity(2, 10)
    g.set_cps("t1", 100)
    g.set_cps("t2", 100)
    for i in range(3):
        assert g.room(1, "t1" if i % 2 else "t2", 0.0) >= 1
        g.take(f"a{i}", 1, "t1" if i % 2 else "t2", 0.0)
    assert g.in_use(1) == 3 and g.room(1, "t1", 0.0) == 0 and g.room(1, "t2", 0.0) == 0
    with pytest.raises(StateError, match="all 3 lines of account 1"):
        g.take("a3", 1, "t1", 0.0)
    assert g.room(2, "t1", 0.0) >= 1  # another account's lines are its own
    g.release("a1")
    g.release("a1")  # twice: no effect
    g.release("unknown")
    assert g.in_use(1) == 2 and g.room(1, "t1", 0.0) == 1 and g.peak[1] == 3


def test_calls_per_second_per_trunk_over_a_sliding_second():
    g = AccountGate()
    g.set_capacity(1, 100)
    g.set_capacity(2, 100)
    g.set_cps("t", 4)
    for i in range(4):
        g.take(f"k{i}", 1 + i % 2, "t", 10.0 + i * 0.1)  # two accounts, one trunk: one cap
    assert g.cps_room("t", 10.5) == 0 and g.cps_room("t", 10.99) == 0
    with pytest.raises(StateError, match="cap of 4 calls per second"):
        g.take("k9", 1, "t", 10.9)
    assert g.cps_room("t", 11.0) == 1 and g.cps_room("t", 11.35) == 4
    assert g.cps_room("other", 0.0) == 0  # an unknown trunk takes nothing


def test_login_guard_backs_off_the_source_not_the_user():
    lg = LoginGuard(free=3, base_s=2.0, max_s=60.0)
    for i in range(3):
        assert lg.wait("10.0.0.5", 100.0) == 0
        lg.failed("10.0.0.5", 100.0)
    assert lg.wait("10.0.0.5", 100.0) == 2.0  # after three free tries: 2 s, then 4, 8 ...
    lg.failed("10.0.0.5", 102.0)
    assert lg.wait("10.0.0.5", 102.0) == 4.0
    assert lg.wait("10.0.0.5", 106.0) == 0.0
    assert lg.wait("10.0.0.6", 102.0) == 0.0  # another address (the real agent) is not slowed
    for _ in range(20):
        lg.failed("10.0.0.5", 110.0)
    assert lg.wait("10.0.0.5", 110.0) == 60.0  # capped
    assert lg.wait("10.0.0.5", 171.0) == 0.0  # forgotten after max_s of quiet
    lg.failed("10.0.0.7", 0.0)
    lg.succeeded("10.0.0.7")
    assert "10.0.0.7" not in lg.failures


def test_source_host():
    assert source_host("127.0.0.1:5062") == "127.0.0.1"
    assert source_host("[::1]:5062") == "::1"
    assert source_host("") == "unknown"


def test_sessions_close_only_their_own_key():
    s = AgentSessions()
    s.open(7, "loop-a", "leg-1")
    s.open(7, "loop-b", "leg-2")  # the newer session
    s.close(7, "leg-1")  # the old leg's end does not close the new one
    assert s.holder(7) == ("loop-b", "leg-2")
    s.close(7, "leg-2")
    assert s.holder(7) is None


def test_call_ids_are_unique_and_time_ordered():
    ids = [uuid7(1_700_000_000_000) for _ in range(5000)]  # one millisecond, one process
    assert len(set(ids)) == 5000 and ids == sorted(ids)
    later = uuid7(1_700_000_000_001 + 5)
    assert later > ids[-1]
    assert all(len(i) == 36 and i[14] == "7" and i[19] in "89ab" for i in ids[:10])
    # a "restart": the same instant again still never repeats an id
    assert not set(uuid7(1_700_000_000_000) for _ in range(100)) & set(ids)
