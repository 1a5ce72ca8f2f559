"""Accounts, campaigns and their life cycle."""

import datetime as dt
import wave

import pytest

from campaigns import model
from campaigns.store import (add_number, add_user, change_state, create_account, create_campaign, get_campaign,
                             set_greeting, show_account)
from core.errors import InputError

NOW = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)


def make_wav(path, rate=8000, channels=1, width=2, seconds=1.0):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x00" * int(rate * seconds) * channels * width)
    return path


@pytest.mark.parametrize("conn,lines,ok", [("adsl", 3, True), ("adsl", 4, False), ("gshdsl", 10, True),
                                           ("gshdsl", 11, False), ("fiber", 120, True), ("dialup", 1, False)])
def test_line_capacity_follows_the_connection(store, conn, lines, ok):
    if ok:
        assert create_account(store, "a", NOW, "t", connection=conn, lines=lines)["line_capacity"] == lines
    else:
        with pytest.raises(InputError):
            create_account(store, "a", NOW, "t", connection=conn, lines=lines)


def test_account_users_numbers(store):
    create_account(store, "acme", NOW, "t")
    add_user(store, "acme", "alice", "agent", NOW, "t")
    add_number(store, "acme", "212 555 9999", NOW, "t")
    with pytest.raises(InputError, match="role"):
        add_user(store, "acme", "bob", "boss", NOW, "t")
    acc = show_account(store, "acme")
    assert acc["numbers"] == ["+12125559999"] and acc["users"] == [{"name": "alice", "role": "agent"}]


def test_campaign_settings_are_validated(store):
    create_account(store, "acme", NOW, "t")
    with pytest.raises(InputError, match="above the legal cap"):
        create_campaign(store, "c", "acme", NOW, "t", abandon_target="0.05")
    with pytest.raises(InputError, match="dial mode"):
        create_campaign(store, "c", "acme", NOW, "t", dial_mode="turbo")
    with pytest.raises(InputError, match="ratio"):
        create_campaign(store, "c", "acme", NOW, "t", dial_mode="power")
    with pytest.raises(InputError, match="retry rule"):
        create_campaign(store, "c", "acme", NOW, "t", retry="busy=soon/3")
    with pytest.raises(InputError, match="campaign hours"):
        create_campaign(store, "c", "acme", NOW, "t", hours="mon-fri=09:00-25:00")
    c = create_campaign(store, "c", "acme", NOW, "t", dial_mode="power", power_ratio="1.5", abandon_target="2",
                        retry="busy=30m/4")
    assert c["abandon_target"] == "0.02" and c["retry_rules"]["busy"] == {"delay_minutes": 30, "max_attempts": 4}


def test_greeting_must_be_8_or_16k_mono_wav(store, tmp_path):
    create_account(store, "acme", NOW, "t")
    create_campaign(store, "c", "acme", NOW, "t")
    with pytest.raises(InputError, match="44100 Hz"):
        set_greeting(store, "c", make_wav(tmp_path / "a.wav", rate=44100), NOW, "t")
    with pytest.raises(InputError, match="2 channels"):
        set_greeting(store, "c", make_wav(tmp_path / "b.wav", channels=2), NOW, "t")
    mp3 = tmp_path / "c.wav"
    mp3.write_bytes(b"ID3\x03\x00" + b"\x00" * 100)
    with pytest.raises(InputError, match="not a WAV"):
        set_greeting(store, "c", mp3, NOW, "t")
    out = set_greeting(store, "c", make_wav(tmp_path / "ok.wav", rate=16000, seconds=2), NOW, "t")
    assert out["seconds"] == 2.0
    assert (store.files_dir / get_campaign(store, "c")["greeting"]).exists()


def test_state_transitions(store, tmp_path):
    create_account(store, "acme", NOW, "t")
    add_number(store, "acme", "212 555 9999", NOW, "t")
    create_campaign(store, "c", "acme", NOW, "t", caller_id="+1 415 555 0000")
    with pytest.raises(InputError, match="cannot start.*not one of the account's own numbers.*greeting"):
        change_state(store, "c", "start", NOW, "t")
    with pytest.raises(InputError, match="cannot pause"):
        change_state(store, "c", "pause", NOW, "t")
    create_campaign(store, "d", "acme", NOW, "t", caller_id="212-555-9999",
                    greeting=make_wav(tmp_path / "g.wav"))
    assert change_state(store, "d", "start", NOW, "t")["state"] == "running"
    assert change_state(store, "d", "pause", NOW, "t")["state"] == "paused"
    assert change_state(store, "d", "start", NOW, "t")["state"] == "running"
    assert change_state(store, "d", "finish", NOW, "t")["state"] == "finished"
    with pytest.raises(InputError, match="cannot start"):
        change_state(store, "d", "start", NOW, "t")
    # preview mode needs no greeting (no call is ever abandoned)
    create_campaign(store, "e", "acme", NOW, "t", caller_id="212-555-9999", dial_mode="preview")
    assert change_state(store, "e", "start", NOW, "t")["state"] == "running"


def test_after_outcome_recycling():
    rules = model.parse_retry("busy=20m/3")
    t = NOW
    ch = model.after_outcome("busy", 1, t, rules)
    assert (ch.status, ch.next_attempt_at) == ("retry", t + dt.timedelta(minutes=20))
    assert model.after_outcome("busy", 3, t, rules).status == "done"
    assert model.after_outcome("answered-human", 1, t, rules).status == "done"
    ch = model.after_outcome("dnc-requested", 1, t, rules)
    assert ch.status == "dnc" and ch.add_to_dnc
    assert model.after_outcome("no-answer", 1, t, rules).next_attempt_at == t + dt.timedelta(hours=2)
    with pytest.raises(InputError):
        model.after_outcome("exploded", 1, t, rules)
