"""`voicecall doctor`'s `load` check judges what admission judges: the loop's load with the
calls taken since counted (`loopLoadProjected`), against the daemon's `maxLoopLoad`."""

from __future__ import annotations

from voicecall_cli.doctor_checks import check_load


def test_calls_taken_since_can_put_it_over() -> None:
    """The window reads 50 %, the calls that came since make it 85 %: new calls are refused."""
    check = check_load({"loopLoad": 0.5, "loopLoadProjected": 0.85, "maxLoopLoad": 0.8}, None)
    assert check.status == "WARN"
    assert "50% busy over the last 5 s, 85% counting the calls taken since" in check.message
    assert "new calls are refused" in check.message


def test_under_the_limit_either_way_is_ok() -> None:
    check = check_load({"loopLoad": 0.5, "loopLoadProjected": 0.6, "maxLoopLoad": 0.8}, None)
    assert check.status == "OK" and "60% counting" in check.message


def test_an_older_daemon_without_the_projection_is_judged_by_its_load() -> None:
    check = check_load({"loopLoad": 0.9, "maxLoopLoad": 0.8}, None)
    assert check.status == "WARN" and "counting" not in check.message
    assert check_load({"loopLoad": 0.5, "maxLoopLoad": 0.8}, None).status == "OK"
