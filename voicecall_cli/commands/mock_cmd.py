"""`voicecall mock inbound`: simulate an inbound call on the mock provider (`mock.inbound`)."""

from __future__ import annotations

from typing import Any

import click

from voicecall_cli import output
from voicecall_cli.context import CliContext, pass_ctx


@click.group("mock", short_help="Try things on the network-free mock provider.")
def mock_group() -> None:
    """Simulate what a carrier would do, on a daemon running provider = "mock".

    \b
    Examples:
      $ voicecall mock inbound --from +15550001234 --say "Hi, is the shop open today?"
    """


@mock_group.command("inbound", short_help="Simulate an inbound call.")
@click.option(
    "--from",
    "from_number",
    required=True,
    metavar="E164",
    help="The caller's number (checked against inbound_policy and allow_from).",
)
@click.option(
    "--to",
    "to_number",
    metavar="E164",
    help="The number called (default: from_number, else +15550000000).",
)
@click.option(
    "--say",
    "utterances",
    multiple=True,
    metavar="TEXT",
    help="What the caller says, one turn per --say, in order.",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"callId", "accepted"}.')
@pass_ctx
def inbound_cmd(
    ctx: CliContext,
    from_number: str,
    to_number: str | None,
    utterances: tuple[str, ...],
    as_json: bool,
) -> None:
    """Ring the daemon with a simulated inbound call, through the real inbound policy.

    An admitted call is answered with inbound_greeting; each --say is the caller's next turn,
    answered by the auto-responder when response_model is set. Follow it with
    `voicecall tail` or read it afterwards with `voicecall calls show ID`. Exits 0 also when
    the policy rejects the call (the output says so); exits 1 unless provider = "mock".

    \b
    Examples:
      $ voicecall mock inbound --from +15550001234
      $ voicecall mock inbound --from +15550001234 --say "Hello?" --say "Thanks, bye."
      $ voicecall mock inbound --from +15550009999 --json
    """
    params: dict[str, Any] = {"from": from_number, "utterances": list(utterances)}
    if to_number:
        params["to"] = to_number
    result = ctx.rpc("mock.inbound", params)
    if as_json:
        output.emit_json(result)
    elif result["accepted"]:
        click.echo(f"inbound call {result['callId']} from {from_number}: accepted")
    else:
        click.echo(
            f"inbound call {result['callId']} from {from_number}: rejected by "
            "inbound_policy/allow_from (or max_concurrent_calls); admit callers with "
            "`voicecall config set inbound_policy open` or add the number to allow_from, "
            "then `voicecall daemon reload`"
        )
