"""`voicecall daemon reload`, SIGHUP and `daemon.reload`: a new config without dropping calls.

Also how `config set/unset` and `daemon restart|stop|logs` behave around a running daemon.
"""

from __future__ import annotations

import json
import signal

import pytest

from daemon.rpc.protocol import RpcRemoteError
from tests.harness import FAST_MOCK, DaemonHarness, wait_for

pytestmark = pytest.mark.e2e

BASE = FAST_MOCK + 'replies = ["Sure."]\n'


def _live_call(d: DaemonHarness) -> str:
    call_id = d.cli_json("call", "--to", "+15550001234", "-m", "Hi", "--mode", "conversation")[
        "callId"
    ]
    d.wait_state(call_id, "speaking", "active", "answered")
    return call_id


def _limit_applies(d: DaemonHarness) -> bool:
    """Whether a second call is refused by max_concurrent_calls = 1."""
    try:
        d.rpc("voicecall.initiate", {"message": "x", "to": "+15550001235"})
    except RpcRemoteError as exc:
        return exc.code == -32006
    return False


def test_reload_applies_live_keys_reports_restart_keys_and_keeps_calls(make_daemon) -> None:
    """Live keys take effect at once, serve.* is reported and kept, the call carries on."""
    d = make_daemon(BASE)
    call_id = _live_call(d)
    webhook = d.rpc("daemon.status")["webhookUrl"]
    d.write_config(
        'max_concurrent_calls = 1\ninbound_greeting = "Hello again"\n'
        + BASE.replace("port = 0", 'port = 0\npath = "/other/hook"')
    )
    done = d.cli("daemon", "reload", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["reloaded"] is True
    assert result["changed"] == ["inbound_greeting", "max_concurrent_calls"]
    assert result["needsRestart"] == ["serve.path"]
    assert _limit_applies(d)
    assert d.rpc("daemon.status")["webhookUrl"] == webhook  # not applied: needs a restart
    # the call survived and still works
    again = d.cli("continue", "--call-id", call_id, "-m", "Still there?")
    assert again.returncode == 0 and again.stdout.strip() == "Sure."
    human = d.cli("daemon", "reload")
    assert human.returncode == 0
    assert "nothing to apply without a restart" in human.stdout
    assert "not applied until `voicecall daemon restart`: serve.path" in human.stderr


def test_invalid_config_is_refused_listing_every_error_and_the_old_one_stays(make_daemon) -> None:
    """Every problem is listed (-32004 over RPC, exit 1 in the CLI); nothing changes."""
    d = make_daemon(BASE)
    call_id = _live_call(d)
    d.write_config(
        "max_concurrent_calls = 1\nmax_duration_seconds = -5\n"
        + BASE.replace("port = 0", 'port = "abc"')
    )
    done = d.cli("daemon", "reload")
    assert done.returncode == 1
    assert "config not reloaded: 2 problems" in done.stderr
    assert "max_duration_seconds = -5" in done.stderr
    assert 'serve.port = "abc"' in done.stderr
    with pytest.raises(RpcRemoteError) as info:
        d.rpc("daemon.reload")
    assert info.value.code == -32004
    assert len(info.value.data["details"]["problems"]) == 2
    assert not _limit_applies(d)  # max_concurrent_calls = 1 was not taken
    assert d.call_record(call_id)["endedAt"] is None
    d.write_config("max_concurrent_calls = 1\n[serve\n")
    syntax = d.cli("daemon", "reload")
    assert syntax.returncode == 1
    assert "line 2, column" in syntax.stderr


def test_sighup_reloads(make_daemon) -> None:
    """SIGHUP does what `daemon reload` does, and logs it."""
    d = make_daemon(BASE)
    _live_call(d)
    d.write_config("max_concurrent_calls = 1\n" + BASE)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in d.log_text(), 15, message="the reload log line")
    assert "applied max_concurrent_calls" in d.log_text()
    assert _limit_applies(d)
    d.write_config("max_concurrent_calls = 0\n" + BASE)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config not reloaded" in d.log_text(), 15, message="the refusal")
    assert d.proc.poll() is None


def test_config_set_and_unset_say_how_a_running_daemon_takes_the_change(make_daemon) -> None:
    """With a daemon running, set/unset point at reload (or restart for restart-only keys)."""
    d = make_daemon(BASE)
    live = d.cli("config", "set", "inbound_greeting", "Good morning")
    assert live.returncode == 0, live.stderr
    assert "`voicecall daemon reload` applies it" in live.stderr
    port = d.cli("config", "set", "serve.bind", "127.0.0.2", "--json")
    assert json.loads(port.stdout)["applyWith"] == "voicecall daemon restart"
    unset = d.cli("config", "unset", "inbound_greeting", "--json")
    assert unset.returncode == 0, unset.stderr
    assert json.loads(unset.stdout) == {
        "key": "inbound_greeting",
        "path": str(d.home / "config.toml"),
        "removed": True,
        "applyWith": "voicecall daemon reload",
    }
    again = d.cli("config", "unset", "inbound_greeting", "--json")
    assert json.loads(again.stdout)["removed"] is False
    d.stop()
    quiet = d.cli("config", "set", "inbound_greeting", "Hi", "--json")
    assert json.loads(quiet.stdout)["applyWith"] is None
    # no daemon: reload only checks the file, so `set ... && daemon reload` works either way
    idle = d.cli("daemon", "reload", "--json")
    assert idle.returncode == 0, idle.stderr
    assert json.loads(idle.stdout) == {"reloaded": False, "running": False}
    assert not d.socket.exists()  # and it started nothing
    d.write_config("max_duration_seconds = -5\n")
    assert d.cli("daemon", "reload").returncode == 1


def test_restart_validates_before_stopping_anything(make_daemon) -> None:
    """A broken config: restart refuses and the daemon keeps running; then JSON outputs."""
    d = make_daemon(BASE, start=False)
    # started by the CLI, not as the test's child: a stopped daemon must not linger as a zombie
    assert d.cli("daemon", "start").returncode == 0
    call_id = _live_call(d)
    pid = d.rpc("daemon.status")["pid"]
    d.write_config("max_duration_seconds = -5\n" + BASE)
    refused = d.cli("daemon", "restart")
    assert refused.returncode == 1
    assert "not restarted" in refused.stderr and "max_duration_seconds = -5" in refused.stderr
    assert d.rpc("daemon.status")["pid"] == pid
    d.write_config(BASE)
    restarted = d.cli("daemon", "restart", "--json")
    assert restarted.returncode == 0, restarted.stderr
    new_pid = json.loads(restarted.stdout)["pid"]
    assert new_pid != pid and d.rpc("daemon.status")["pid"] == new_pid
    assert d.call_record(call_id)["endedAt"] is None  # restored by the new daemon
    logs = d.cli("daemon", "logs", "-n", "5", "--json")
    assert logs.returncode == 0, logs.stderr
    records = [json.loads(line) for line in logs.stdout.splitlines()]
    assert records and all(
        {"time", "level", "logger", "message", "line"} <= set(r) for r in records
    )
    assert any(r["level"] == "INFO" for r in records)
    assert json.loads(d.cli("daemon", "stop", "--json").stdout) == {"stopped": True}
    assert json.loads(d.cli("daemon", "stop", "--json").stdout) == {"stopped": False}
