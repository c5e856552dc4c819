"""The call state machine as a table."""

from __future__ import annotations

import pytest

from daemon.errors import InvalidTransitionError
from daemon.model.state import (
    ENDED_STATES,
    LIVE_ORDER,
    TRANSITIONS,
    CallState,
    can_transition,
    transition,
)

S = CallState


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (S.INITIATED, S.RINGING, True),
        (S.INITIATED, S.ANSWERED, True),
        (S.RINGING, S.INITIATED, False),
        (S.ANSWERED, S.RINGING, False),
        (S.SPEAKING, S.LISTENING, True),
        (S.LISTENING, S.SPEAKING, True),
        (S.SPEAKING, S.ACTIVE, False),
        (S.RINGING, S.BUSY, True),
        (S.LISTENING, S.HANGUP_USER, True),
        (S.COMPLETED, S.ACTIVE, False),
        (S.HANGUP_BOT, S.COMPLETED, False),
        (S.ACTIVE, S.ACTIVE, True),
        (S.TIMEOUT, S.TIMEOUT, True),
    ],
)
def test_transition_table(current: CallState, target: CallState, allowed: bool) -> None:
    """Forward only, speaking<->listening, any live state may end, ended is final."""
    assert can_transition(current, target) is allowed
    if allowed:
        assert transition("c1", current, target) is target
    else:
        with pytest.raises(InvalidTransitionError) as info:
            transition("c1", current, target)
        assert current.value in info.value.message and target.value in info.value.message


def test_every_live_state_can_end_and_ended_states_are_final() -> None:
    """The table covers every state."""
    assert set(TRANSITIONS) == set(CallState)
    for state in LIVE_ORDER:
        assert TRANSITIONS[state] >= ENDED_STATES
        assert not state.is_ended
    for state in ENDED_STATES:
        assert TRANSITIONS[state] == frozenset()
        assert state.is_ended


def test_a_record_moves_only_through_the_table() -> None:
    """`CallRecord.move_to` is the one state writer: a forbidden move raises and changes
    nothing; `unless_behind` turns a late (backward) move into staying put."""
    from daemon.model.events import CallMode, Direction
    from daemon.model.record import CallRecord

    record = CallRecord("c1", "mock", Direction.OUTBOUND, CallMode.NOTIFY, "+1555", "+1556")
    record.move_to(CallState.ACTIVE)
    assert record.state is CallState.ACTIVE
    record.move_to(CallState.ANSWERED, unless_behind=True)
    assert record.state == CallState.ACTIVE  # `==`: mypy narrowed it to ACTIVE above
    with pytest.raises(InvalidTransitionError):
        record.move_to(CallState.ANSWERED)
    record.move_to(CallState.COMPLETED)
    with pytest.raises(InvalidTransitionError):
        record.move_to(CallState.ACTIVE)
    assert record.to_wire()["state"] == "completed"
