"""`voicecall calls`: the call history (list, one transcript, export), from `voicecall.list`.

The live-call commands (call, continue, status ...) live in `calls.py`; this module only reads
what the daemon's store remembers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from voicecall_cli import output
from voicecall_cli.completion import complete_call_id
from voicecall_cli.context import CliContext, pass_ctx
from voicecall_cli.errors import CliError

COLUMNS = ("id", "direction", "from", "to", "state", "started", "duration")


class IsoDate(click.ParamType[str, Any]):
    """An ISO 8601 date or date-time; UTC when it names no zone. Converted to UTC text."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Normalise to `YYYY-MM-DDTHH:MM:SS.mmmZ`, the store's format."""
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(
                f"{text!r} is not an ISO 8601 date or date-time; use e.g. 2026-01-31, "
                "2026-01-31T09:30 (UTC) or 2026-01-31T09:30+01:00",
                param,
                ctx,
            )
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def duration(call: dict[str, Any], now: datetime | None = None) -> str:
    """Talk time: answered to ended (or to now while live); `-` if never answered."""
    answered = _parse(call.get("answeredAt"))
    if answered is None:
        return "-"
    end = _parse(call.get("endedAt")) or now or datetime.now(UTC)
    seconds = max(0, int((end - answered).total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def started(call: dict[str, Any]) -> str:
    """`2026-01-31 09:30:05` (UTC), shorter than the ISO form and still sortable."""
    moment = _parse(call.get("startedAt"))
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def table(calls: list[dict[str, Any]]) -> str:
    """The history table: a header row, then one row per call, columns aligned."""
    rows = [list(COLUMNS)]
    for call in calls:
        rows.append(
            [
                str(call.get("callId") or "-"),
                str(call.get("direction") or "-"),
                str(call.get("from") or "-"),
                str(call.get("to") or "-"),
                str(call.get("state") or "-"),
                started(call),
                duration(call),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines[0] = output.style(lines[0], bold=True)
    return "\n".join(lines)


def transcript_text(call: dict[str, Any]) -> str:
    """A plain-text transcript with a short header (also the `txt` export)."""
    peer = call.get("to") if call.get("direction") == "outbound" else call.get("from")
    lines = [
        f"call {call['callId']}  {call.get('direction')} {call.get('mode')}  "
        f"{call.get('from') or '?'} -> {call.get('to') or '?'}",
        f"started {call.get('startedAt')}  state {call.get('state')}  duration {duration(call)}",
    ]
    entries = call.get("transcript") or []
    if not entries:
        lines.append(f"(nothing was said with {peer or 'the other side'})")
    for entry in entries:
        moment = _parse(entry.get("timestamp"))
        clock = moment.strftime("%H:%M:%S") if moment else "--:--:--"
        who = "bot " if entry.get("speaker") == "bot" else "user"
        lines.append(f"{clock}  {who}: {entry.get('text', '')}")
    return "\n".join(lines)


def _get(ctx: CliContext, call_id: str) -> dict[str, Any]:
    result = ctx.rpc("voicecall.status", {"callId": call_id})
    if not result.get("found"):
        raise CliError(f"no call with id {call_id!r}; list calls with `voicecall calls`")
    call: dict[str, Any] = result["call"]
    return call


@click.group("calls", invoke_without_command=True, short_help="List past and live calls.")
@click.option("--active", is_flag=True, help="Only live calls.")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=10_000),
    default=20,
    show_default=True,
    help="How many calls to list, newest first.",
)
@click.option(
    "--since",
    type=IsoDate(),
    metavar="DATE",
    help="Only calls started at or after DATE (ISO 8601 date or date-time; UTC when "
    "it names no zone).",
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"calls": [...]} with full call records.'
)
@click.pass_context
def calls_group(
    click_ctx: click.Context, active: bool, limit: int, since: str | None, as_json: bool
) -> None:
    """List calls, newest first: id, direction, from, to, state, started (UTC), duration.

    Duration is talk time, from answer to hang-up ("-" for a call never answered).

    \b
    Examples:
      $ voicecall calls
      $ voicecall calls --active
      $ voicecall calls --since 2026-01-31 --limit 100 --json
      $ voicecall calls show CALL_ID
      $ voicecall calls export CALL_ID --format txt > call.txt
    """
    if click_ctx.invoked_subcommand is not None:
        return
    ctx = click_ctx.find_object(CliContext)
    assert ctx is not None
    params: dict[str, Any] = {"limit": limit}
    if active:
        params["active"] = True
    if since is not None:
        params["since"] = since
    result = ctx.rpc("voicecall.list", params)
    if as_json:
        output.emit_json(result)
    elif not result["calls"]:
        click.echo("No calls" + (" since " + since if since else "") + ".", err=True)
    else:
        click.echo(table(result["calls"]))


@calls_group.command("show", short_help="Print one call's transcript.")
@click.argument("call_id", metavar="ID", shell_complete=complete_call_id)
@click.option("--json", "as_json", is_flag=True, help="Print the call record as JSON.")
@pass_ctx
def show_cmd(ctx: CliContext, call_id: str, as_json: bool) -> None:
    """Print the transcript of call ID (live or ended), one line per utterance.

    \b
    Examples:
      $ voicecall calls show CALL_ID
    """
    call = _get(ctx, call_id)
    if as_json:
        output.emit_json(call)
    else:
        click.echo(transcript_text(call))


@calls_group.command("export", short_help="Export one call as JSON or text.")
@click.argument("call_id", metavar="ID", shell_complete=complete_call_id)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "txt"]),
    default="json",
    show_default=True,
    help="json: the whole call record; txt: the transcript.",
)
@pass_ctx
def export_cmd(ctx: CliContext, call_id: str, fmt: str) -> None:
    """Write call ID to stdout: the full record as JSON, or the transcript as plain text.

    \b
    Examples:
      $ voicecall calls export CALL_ID > call.json
      $ voicecall calls export CALL_ID --format txt
    """
    call = _get(ctx, call_id)
    if fmt == "json":
        import json

        click.echo(json.dumps(call, ensure_ascii=False, indent=2))
    else:
        click.echo(transcript_text(call))
