"""Call commands: call, continue, speak, end, status, tail, dtmf, latency, expose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from daemon.rpc.protocol import RpcRemoteError
from voicecall_cli import message as message_arg
from voicecall_cli import output, progress
from voicecall_cli.completion import complete_call_id
from voicecall_cli.context import CliContext, call_or_fail, pass_ctx
from voicecall_cli.errors import CliError

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON (stable camelCase keys)."
)


FC = TypeVar("FC", bound=Callable[..., Any])


def call_id_option(
    required: bool = True, help_text: str = "The call to act on."
) -> Callable[[FC], FC]:
    """The --call-id option, completing ids from the running daemon."""
    return click.option(
        "--call-id",
        "call_id",
        required=required,
        metavar="ID",
        help=help_text,
        shell_complete=complete_call_id,
    )


def _render(as_json: bool, data: Any, human: Callable[[Any], str]) -> None:
    if as_json:
        output.emit_json(data)
    else:
        click.echo(human(data))


@click.command("call", short_help="Place an outbound call.")
@click.option("--to", metavar="E164", help="Number to call (default: to_number from the config).")
@click.option(
    "--message",
    "-m",
    required=True,
    help="What to say when the call is answered." + message_arg.HELP_SUFFIX,
)
@click.option(
    "--mode",
    type=click.Choice(["notify", "conversation"]),
    help="notify: speak, then hang up. conversation: stay on the line for `continue`. "
    "Default: outbound.default_mode.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Follow the call's events (on stderr) until it ends; exit 1 unless it was answered.",
)
@json_option
@pass_ctx
def call_cmd(
    ctx: CliContext, to: str | None, message: str, mode: str | None, wait: bool, as_json: bool
) -> None:
    """Place an outbound call and speak MESSAGE when it is answered.

    Prints the new call's id alone on stdout (progress goes to stderr), so that
    `ID=$(voicecall call ...)` captures it. In notify mode the call hangs up a few seconds
    after the message has played; in conversation mode it stays up for `continue`, `speak`
    and `end`.

    \b
    Examples:
      $ voicecall call --to +15550001234 --message "Your package has arrived."
      $ ID=$(voicecall call --to +15550001234 -m "Hi, it's the clinic." --mode conversation)
      $ voicecall call -m "Reminder: standup in 5 minutes." --wait
      $ voicecall call --to +15550001234 -m @reminder.txt
    """
    params: dict[str, Any] = {"message": message_arg.resolve(message)}
    if to:
        params["to"] = to
    if mode:
        params["mode"] = mode
    with progress.waiting(f"placing the call to {to or 'to_number'}"):
        result = ctx.rpc("voicecall.initiate", params)
    if as_json:
        output.emit_json(result)
    else:
        click.echo(f"Calling {result['to']} ({result['mode']}): call {result['callId']}", err=True)
        click.echo(result["callId"])
    if wait:
        with progress.waiting(f"following call {result['callId']} until it ends") as status:
            ended = _follow(ctx, result["callId"], as_json, until_end=True, status=status)
        if ended not in ("hangup-bot", "hangup-user", "completed"):
            raise CliError(f"call {result['callId']} ended: {ended}")


@click.command("continue", short_help="Speak, then wait for the caller's reply.")
@call_id_option()
@click.option(
    "--message", "-m", required=True, help="What to say before listening." + message_arg.HELP_SUFFIX
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="How long to wait for the reply (default: transcript_timeout_ms).",
)
@json_option
@pass_ctx
def continue_cmd(
    ctx: CliContext, call_id: str, message: str, timeout: float | None, as_json: bool
) -> None:
    """Say MESSAGE on a live call, wait for the caller's next turn and print what they said.

    Ctrl-C stops waiting (exit 130) and frees the call for the next `continue`; the call
    itself stays up.

    \b
    Examples:
      $ voicecall continue --call-id CALL_ID --message "Does Tuesday work?"
      $ voicecall continue --call-id CALL_ID -m "Anything else?" --timeout 30 --json
      $ echo "Which day suits you?" | voicecall continue --call-id CALL_ID -m -
    """
    params: dict[str, Any] = {"callId": call_id, "message": message_arg.resolve(message)}
    if timeout is not None:
        params["timeoutMs"] = int(timeout * 1000)
    try:
        with progress.waiting(f"waiting for the caller's reply on call {call_id}"):
            result = ctx.rpc("voicecall.continue", params, timeout=None)
    except KeyboardInterrupt:
        _cancel_wait(ctx, call_id)
        raise
    _render(as_json, result, lambda r: r["transcript"])


def _cancel_wait(ctx: CliContext, call_id: str) -> None:
    """Tell the daemon to drop the transcript waiter we leave behind (best effort).

    Without this the call stays "already waiting" until the abandoned wait times out.
    """
    try:
        with ctx.connect(timeout=3.0, autostart=False) as client:
            client.call("voicecall.cancel", {"callId": call_id})
    except (click.ClickException, OSError, ValueError, RpcRemoteError):
        click.echo(
            f"Warning: could not cancel the wait on call {call_id}; the next "
            "`continue` may find it still waiting",
            err=True,
        )


@click.command("speak", short_help="Speak on a live call without waiting.")
@call_id_option()
@click.option("--message", "-m", required=True, help="What to say." + message_arg.HELP_SUFFIX)
@json_option
@pass_ctx
def speak_cmd(ctx: CliContext, call_id: str, message: str, as_json: bool) -> None:
    """Say MESSAGE on a live call and return at once.

    \b
    Examples:
      $ voicecall speak --call-id CALL_ID --message "One moment, please."
    """
    result = ctx.rpc(
        "voicecall.speak", {"callId": call_id, "message": message_arg.resolve(message)}
    )
    _render(as_json, result, lambda r: "Spoken.")


@click.command("end", short_help="Hang up a call.")
@call_id_option()
@json_option
@pass_ctx
def end_cmd(ctx: CliContext, call_id: str, as_json: bool) -> None:
    """Hang up a call (an already-ended call is fine).

    \b
    Examples:
      $ voicecall end --call-id CALL_ID
    """
    result = ctx.rpc("voicecall.end", {"callId": call_id})
    _render(as_json, result, lambda r: f"Call {call_id} ended.")


@click.command("status", short_help="Show one call, or all active calls.")
@call_id_option(required=False, help_text="Show this call (live or ended).")
@json_option
@pass_ctx
def status_cmd(ctx: CliContext, call_id: str | None, as_json: bool) -> None:
    """Show a call's record and transcript, or list the active calls.

    Exits 1 when --call-id names no call (with --json it still prints {"found":false}).

    \b
    Examples:
      $ voicecall status
      $ voicecall status --call-id CALL_ID --json
    """
    if call_id is None:
        result = ctx.rpc("voicecall.status", {})
        _render(
            as_json,
            result,
            lambda r: "\n".join(output.call_row(c) for c in r["calls"]) or "No active calls.",
        )
        return
    result = ctx.rpc("voicecall.status", {"callId": call_id})
    if as_json:
        output.emit_json(result)
    if not result.get("found"):
        if as_json:
            raise SystemExit(1)
        raise CliError(f"no call with id {call_id!r}; list active calls with `voicecall status`")
    if not as_json:
        click.echo(output.call_summary(result["call"]))


def _follow(
    ctx: CliContext,
    call_id: str | None,
    as_json: bool,
    *,
    since: int | None = None,
    follow: bool = True,
    until_end: bool = False,
    status: progress.Status | None = None,
) -> str | None:
    """Print events (backlog, then live); return the end reason when following to the end.

    With a status line (`call --wait`) human event lines are progress and go to stderr;
    JSON lines always go to stdout.
    """
    params: dict[str, Any] = {}
    if call_id:
        params["callId"] = call_id
    if since is not None:
        params["since"] = since
    elif until_end:
        params["since"] = 1000
    with ctx.connect(timeout=None) as client:
        reply = call_or_fail(client, "voicecall.tail", params)
        remaining = int(reply.get("backlog", 0))
        if not follow and remaining == 0:
            return None
        for message in client.notifications():
            event = (message.get("params") or {}).get("event") or {}
            line = output.json_text(event) if as_json else output.event_line(event)
            if status is not None:
                status.echo(line, err=not as_json)
            else:
                click.echo(line)
            remaining -= 1
            if until_end and event.get("type") == "call.ended":
                return str(event.get("reason"))
            if not follow and remaining <= 0:
                return None
    return None


@click.command("tail", short_help="Print recent call events, then follow new ones.")
@call_id_option(required=False, help_text="Only this call's events.")
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=25,
    show_default=True,
    help="How many past events to print first.",
)
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="Keep printing new events until interrupted.",
)
@json_option
@pass_ctx
def tail_cmd(ctx: CliContext, call_id: str | None, since: int, follow: bool, as_json: bool) -> None:
    """Print the last events of every call (or one call), then follow live.

    With --json each event is one JSON line.

    \b
    Examples:
      $ voicecall tail
      $ voicecall tail --call-id CALL_ID --since 100 --no-follow --json
    """
    _follow(ctx, call_id, as_json, since=since, follow=follow)


@click.command("dtmf", short_help="Send DTMF digits on a live call.")
@call_id_option()
@click.option("--digits", required=True, help="Digits 0-9, * and #; w pauses half a second.")
@json_option
@pass_ctx
def dtmf_cmd(ctx: CliContext, call_id: str, digits: str, as_json: bool) -> None:
    """Send touch-tone digits.

    \b
    Examples:
      $ voicecall dtmf --call-id CALL_ID --digits 1234#
    """
    result = ctx.rpc("voicecall.dtmf", {"callId": call_id, "digits": digits})
    _render(as_json, result, lambda r: f"Sent {digits}.")


@click.command("latency", short_help="Show turn latency statistics.")
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="How many recent turns to include.",
)
@json_option
@pass_ctx
def latency_cmd(ctx: CliContext, last: int, as_json: bool) -> None:
    """Show how long `continue` turns took (speaking + waiting for the caller).

    \b
    Examples:
      $ voicecall latency --last 50
    """
    result = ctx.rpc("voicecall.latency", {"last": last})

    def human(r: dict[str, Any]) -> str:
        lines = []
        for key, label in (("turnLatency", "turn latency"), ("listenWait", "listen wait")):
            s = r[key]
            if not s.get("count"):
                lines.append(f"{label}: no turns yet")
            else:
                lines.append(
                    f"{label}: n={s['count']} p50={s['p50Ms']}ms p95={s['p95Ms']}ms "
                    f"min={s['minMs']}ms max={s['maxMs']}ms"
                )
        return "\n".join(lines)

    _render(as_json, result, human)


@click.command("expose", short_help="Publish the webhook through Tailscale.")
@click.option(
    "--mode",
    type=click.Choice(["funnel", "serve", "off"]),
    required=True,
    help="funnel: public internet; serve: your tailnet only; off: remove.",
)
@click.option("--path", metavar="P", help="Path to publish (default: tailscale.path).")
@json_option
@pass_ctx
def expose_cmd(ctx: CliContext, mode: str, path: str | None, as_json: bool) -> None:
    """Publish the webhook and media-stream paths with Tailscale serve or funnel.

    \b
    Examples:
      $ voicecall expose --mode funnel
      $ voicecall expose --mode off
    """
    params: dict[str, Any] = {"mode": mode}
    if path:
        params["path"] = path
    result = ctx.rpc("voicecall.expose", params, timeout=60)
    _render(as_json, result, lambda r: f"Exposure {r['mode']}: {r.get('publicUrl') or '-'}")
