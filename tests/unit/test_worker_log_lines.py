"""`voicecall daemon logs --json` reads the `w<i>` tag of lines written by `--workers N`."""

from __future__ import annotations

from voicecall_cli.commands.daemon_cmd import log_record


def test_a_worker_line_keeps_its_tag_and_a_plain_line_has_none() -> None:
    worker = log_record("2026-12-06 10:08:18,316 INFO w2 daemon.app: voicecall daemon ready")
    assert worker["worker"] == "w2" and worker["logger"] == "daemon.app"
    assert worker["message"] == "voicecall daemon ready"
    plain = log_record("2026-12-06 10:08:18,316 WARNING daemon.workers: worker 2 exited")
    assert plain["worker"] is None and plain["logger"] == "daemon.workers"
    assert plain["message"] == "worker 2 exited"
