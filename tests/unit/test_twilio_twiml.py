"""TwiML rendering, voice mapping and callback URLs of the Twilio provider."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest

from daemon.providers.twilio_twiml import (
    HOLD_SECONDS,
    Digits,
    HangUp,
    Listen,
    Pause,
    Reject,
    Say,
    Stream,
    TwimlContext,
    callback_url,
    empty_response,
    map_voice,
    notify_twiml,
    render,
)

CTX = TwimlContext("https://voice.example.com/voice/webhook", "call-1", "Polly.Matthew")


def body(document: str) -> str:
    """The document without the XML declaration and the random nonces."""
    document = document.removeprefix('<?xml version="1.0" encoding="UTF-8"?>')
    return re.sub(r"n=[0-9a-f]{8}", "n=N", document)


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


@pytest.mark.parametrize(
    ("voice", "expected"),
    [
        ("alloy", "Polly.Joanna"),
        ("echo", "Polly.Matthew"),
        ("fable", "Polly.Amy"),
        ("onyx", "Polly.Brian"),
        ("nova", "Polly.Salli"),
        ("shimmer", "Polly.Kimberly"),
        ("Polly.Joey", "Polly.Joey"),
        ("Google.en-US-Neural2-F", "Google.en-US-Neural2-F"),
        ("coral", "Polly.Joanna"),
        ("", "Polly.Joanna"),
        (None, "Polly.Joanna"),
    ],
)
def test_voice_mapping(voice: str | None, expected: str) -> None:
    """OpenAI voices map to Polly; Polly.*/Google.* pass through; anything else is Joanna."""
    assert map_voice(voice) == expected


def test_notify_twiml_says_pauses_and_hangs_up() -> None:
    """Notify: Say with the mapped voice, Pause for the hang-up delay, Hangup; nothing else."""
    assert body(notify_twiml("Table <ready> & set", "Polly.Amy", 3)) == (
        '<Response><Say voice="Polly.Amy">Table &lt;ready&gt; &amp; set</Say>'
        '<Pause length="3" /><Hangup /></Response>'
    )


def test_notify_twiml_without_delay_has_no_pause() -> None:
    """A delay of 0 renders no Pause at all."""
    assert body(notify_twiml("Bye", "Polly.Joanna", 0)) == (
        '<Response><Say voice="Polly.Joanna">Bye</Say><Hangup /></Response>'
    )


def test_say_then_keep_alive() -> None:
    """Speak without a token: Say, then a Pause + Redirect back to the webhook (flow=hold)."""
    assert body(render([Say("Hello")], CTX)) == (
        '<Response><Say voice="Polly.Matthew">Hello</Say>'
        f'<Pause length="{HOLD_SECONDS}" />'
        '<Redirect method="POST">https://voice.example.com/voice/webhook?callId=call-1&amp;'
        "flow=hold&amp;n=N</Redirect></Response>"
    )


def test_say_and_gather_carry_the_turn_token() -> None:
    """Speak with a token: Say, Gather(dtmf speech, auto) whose action carries the token, then a
    Redirect that listens again with the same token."""
    document = render([Say("Does Tuesday work?"), Listen("tok-1")], CTX)
    root = ET.fromstring(document)
    assert [child.tag for child in root] == ["Say", "Gather", "Redirect"]
    gather = root[1]
    assert gather.attrib == {
        "input": "dtmf speech",
        "speechTimeout": "auto",
        "timeout": "10",
        "method": "POST",
        "action": gather.attrib["action"],
    }
    assert query(gather.attrib["action"])["turnToken"] == ["tok-1"]
    assert query(gather.attrib["action"])["callId"] == ["call-1"]
    again = query(root[2].text or "")
    assert again["flow"] == ["listen"] and again["turnToken"] == ["tok-1"]


def test_every_rendered_url_is_unique() -> None:
    """Each URL carries a fresh nonce, so a keep-alive loop is never mistaken for a replay."""
    first, second = render([], CTX), render([], CTX)
    assert first != second
    assert body(first) == body(second)


def test_dtmf_then_keep_alive() -> None:
    """DTMF: Play digits, then the keep-alive."""
    root = ET.fromstring(render([Digits("12w#")], CTX))
    assert [c.tag for c in root] == ["Play", "Pause", "Redirect"]
    assert root[0].attrib == {"digits": "12w#"}


def test_reject_and_hangup_end_the_document() -> None:
    """Nothing follows Reject or Hangup (no keep-alive)."""
    assert body(render([Reject()], CTX)) == "<Response><Reject /></Response>"
    assert body(render([Reject(busy=True)], CTX)) == '<Response><Reject reason="busy" /></Response>'

    assert body(render([Say("Bye"), Pause(2), HangUp()], CTX)) == (
        '<Response><Say voice="Polly.Matthew">Bye</Say><Pause length="2" /><Hangup /></Response>'
    )


def test_connect_stream_passes_the_token_as_a_parameter() -> None:
    """Twilio drops query strings from stream URLs: the token is a <Parameter>."""
    document = render([Stream("wss://voice.example.com/voice/stream", "T0K", "call-1")], CTX)
    assert body(document) == (
        '<Response><Connect><Stream url="wss://voice.example.com/voice/stream">'
        '<Parameter name="token" value="T0K" /><Parameter name="callId" value="call-1" />'
        "</Stream></Connect></Response>"
    )


def test_empty_response() -> None:
    """Status callbacks and replays get an empty Response."""
    assert body(empty_response()) == "<Response />"


def test_callback_url_keeps_existing_query_and_skips_none() -> None:
    """Parameters are appended to an existing query; None values are left out."""
    assert callback_url("https://h/p?a=1", callId="c", turnToken=None, type="status") == (
        "https://h/p?a=1&callId=c&type=status"
    )
