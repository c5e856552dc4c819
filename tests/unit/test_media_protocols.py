"""Provider media-stream framings: golden JSON out, normalised messages in, the fast path."""

from __future__ import annotations

import base64
import json

import pytest

from daemon.media.protocols import (
    MediaFraming,
    PlivoFraming,
    StreamEvent,
    StreamMessage,
    TelnyxFraming,
    TwilioFraming,
    framing_for,
)
from daemon.media.wire import AudioFrames, text_frame

PAYLOAD = base64.b64encode(bytes(range(160))).decode()

TWILIO_START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": "MZ123",
        "start": {
            "accountSid": "AC1",
            "streamSid": "MZ123",
            "callSid": "CA456",
            "tracks": ["inbound"],
            "customParameters": {"token": "tok", "callId": "c-1"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
)
TELNYX_START = json.dumps(
    {
        "event": "start",
        "sequence_number": "1",
        "stream_id": "st-9",
        "start": {
            "call_control_id": "v3:abc",
            "client_state": "Y2FsbC0x",
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            "custom_parameters": {"token": "tok"},
        },
    }
)
PLIVO_START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": "pl-call",
            "streamId": "pl-stream",
            "accountId": "MA1",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": "token=tok;callId=c-1",
    }
)


def test_twilio_start_is_normalised() -> None:
    """start gives stream id, callSid and the custom parameters (where the token travels)."""
    framing = TwilioFraming()
    assert framing.decode(TWILIO_START) == StreamMessage(
        StreamEvent.START,
        stream_id="MZ123",
        provider_call_id="CA456",
        parameters={"token": "tok", "callId": "c-1"},
        encoding="audio/x-mulaw",
    )


def test_twilio_outbound_golden() -> None:
    """media, mark and clear exactly as Twilio documents them."""
    framing = TwilioFraming()
    framing.decode(TWILIO_START)
    assert framing.encode_media(PAYLOAD) == (
        '{"event":"media","streamSid":"MZ123","media":{"payload":"' + PAYLOAD + '"}}'
    )
    assert framing.encode_mark("vc-1") == (
        '{"event":"mark","streamSid":"MZ123","mark":{"name":"vc-1"}}'
    )
    assert framing.encode_clear() == '{"event":"clear","streamSid":"MZ123"}'
    assert json.loads(framing.encode_media(PAYLOAD))["media"]["payload"] == PAYLOAD


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"event":"connected","protocol":"Call","version":"1.0.0"}',
            StreamMessage(StreamEvent.CONNECTED),
        ),
        (
            '{"event":"mark","sequenceNumber":"4","streamSid":"MZ123","mark":{"name":"vc-7"}}',
            StreamMessage(StreamEvent.MARK, name="vc-7"),
        ),
        (
            '{"event":"dtmf","streamSid":"MZ123","sequenceNumber":"5",'
            '"dtmf":{"track":"inbound_track","digit":"#"}}',
            StreamMessage(StreamEvent.DTMF, digit="#"),
        ),
        (
            '{"event":"stop","sequenceNumber":"9","streamSid":"MZ123",'
            '"stop":{"accountSid":"AC1","callSid":"CA456"}}',
            StreamMessage(StreamEvent.STOP),
        ),
        (
            '{"event": "media", "media": {"track": "inbound", "payload": "AAAA"}}',
            StreamMessage(StreamEvent.MEDIA, payload="AAAA"),
        ),
        ('{"event":"media","media":{"track":"outbound","payload":"AAAA"}}', None),
        ('{"event":"unknown"}', None),
        ("not json", None),
        ("[1, 2]", None),
        ('{"event":"start","start":{}}', None),
    ],
)
def test_twilio_inbound(text: str, expected: StreamMessage | None) -> None:
    """Every Twilio event decodes to its normalised message; junk decodes to None."""
    framing = TwilioFraming()
    framing.decode(TWILIO_START)
    assert framing.decode(text) == expected


def test_fast_path_matches_the_full_parse() -> None:
    """The substring fast path returns what json.loads would, for Twilio's compact media."""
    framing = TwilioFraming()
    text = (
        '{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1",'
        f'"timestamp":"5","payload":"{PAYLOAD}"}},"streamSid":"MZ123"}}'
    )
    assert framing.media_payload(text) is None  # before start: always the careful path
    framing.decode(TWILIO_START)
    assert framing.media_payload(text) == PAYLOAD
    decoded = framing.decode(text)
    assert decoded is not None and decoded.payload == PAYLOAD


@pytest.mark.parametrize(
    "text",
    [
        '{"event": "media", "media": {"payload": "AAAA"}}',  # spaced: not the fast-path shape
        '{"event":"media","media":{"payload":"AA\\/A"}}',  # escaped slash: must be unescaped
        '{"event":"media","media":{"track":"outbound","payload":"AAAA"}}',
        '{"sequenceNumber":"1","event":"media","media":{"payload":"AAAA"}}',
        '{"event":"mark","mark":{"name":"\\"event\\":\\"media\\""}}',
    ],
)
def test_fast_path_declines_what_it_cannot_be_sure_of(text: str) -> None:
    """Anything but a plain top-level media message goes to the full parser."""
    framing = TwilioFraming()
    framing.decode(TWILIO_START)
    assert framing.media_payload(text) is None


def test_telnyx_framing() -> None:
    """Telnyx: snake_case start with call_control_id; outbound carries no stream id."""
    framing = TelnyxFraming()
    start = framing.decode(TELNYX_START)
    assert start == StreamMessage(
        StreamEvent.START,
        stream_id="st-9",
        provider_call_id="v3:abc",
        parameters={"token": "tok", "client_state": "Y2FsbC0x"},
        encoding="PCMU",
    )
    assert framing.encode_media(PAYLOAD) == (
        '{"event":"media","media":{"payload":"' + PAYLOAD + '"}}'
    )
    assert framing.encode_mark("vc-1") == '{"event":"mark","mark":{"name":"vc-1"}}'
    assert framing.encode_clear() == '{"event":"clear"}'
    media = (
        '{"event":"media","sequence_number":"4","stream_id":"st-9","media":'
        '{"track":"inbound","chunk":"2","timestamp":"40","payload":"AAAA"}}'
    )
    assert framing.media_payload(media) == "AAAA"
    assert framing.decode('{"event":"mark","stream_id":"st-9","mark":{"name":"vc-1"}}') == (
        StreamMessage(StreamEvent.MARK, name="vc-1")
    )
    assert framing.decode('{"event":"dtmf","stream_id":"st-9","dtmf":{"digit":"5"}}') == (
        StreamMessage(StreamEvent.DTMF, digit="5")
    )


def test_plivo_framing() -> None:
    """Plivo: playAudio / checkpoint / clearAudio out; playedStream, played and clearedAudio
    in; extra_headers are `k=v;k=v`."""
    framing = PlivoFraming()
    assert framing.decode(PLIVO_START) == StreamMessage(
        StreamEvent.START,
        stream_id="pl-stream",
        provider_call_id="pl-call",
        parameters={"token": "tok", "callId": "c-1"},
        encoding="audio/x-mulaw",
    )
    assert framing.encode_media(PAYLOAD) == (
        '{"event":"playAudio","media":{"contentType":"audio/x-mulaw","sampleRate":8000,'
        '"payload":"' + PAYLOAD + '"}}'
    )
    assert framing.encode_mark("vc-1") == (
        '{"event":"checkpoint","streamId":"pl-stream","name":"vc-1"}'
    )
    assert framing.encode_clear() == '{"event":"clearAudio","streamId":"pl-stream"}'
    assert framing.decode('{"event":"playedStream","streamId":"pl-stream","name":"vc-1"}') == (
        StreamMessage(StreamEvent.MARK, name="vc-1")
    )
    assert framing.decode('{"event":"played","streamId":"pl-stream","name":"vc-2"}') == (
        StreamMessage(StreamEvent.MARK, name="vc-2")
    )
    assert framing.decode('{"event":"clearedAudio","streamId":"pl-stream"}') == (
        StreamMessage(StreamEvent.CLEARED)
    )


@pytest.mark.parametrize("extra", ['{"token":"tok"}', "token=tok", {"token": "tok"}])
def test_plivo_extra_headers_forms(extra: object) -> None:
    """extra_headers as an object, a JSON string or k=v pairs all yield the token."""
    framing = PlivoFraming()
    start = framing.decode(
        json.dumps(
            {"event": "start", "extra_headers": extra, "start": {"callId": "c", "streamId": "s"}}
        )
    )
    assert start is not None and start.parameters["token"] == "tok"


def test_framing_for_names_every_provider() -> None:
    """mock speaks Twilio's protocol; an unknown provider is a clear error."""
    assert isinstance(framing_for("mock"), TwilioFraming)
    assert isinstance(framing_for("telnyx"), TelnyxFraming)
    with pytest.raises(ValueError, match="no media-stream framing"):
        framing_for("sip")


@pytest.mark.parametrize(
    ("framing", "start"),
    [
        (TwilioFraming(), TWILIO_START),
        (TelnyxFraming(), TELNYX_START),
        (PlivoFraming(), PLIVO_START),
    ],
    ids=["twilio", "telnyx", "plivo"],
)
def test_audio_frames_built_as_bytes_are_the_messages_encode_media_makes(
    framing: MediaFraming, start: str
) -> None:
    """The playback's byte-level frame builder sends exactly the golden message, headed as
    one websocket text frame, for whole frames and a short last one alike."""
    framing.decode(start)
    frames = [bytes(range(160)), bytes(range(7, 167)), b"\x7f" * 13]
    built = list(AudioFrames().build(framing, frames))
    expected = [
        text_frame(framing.encode_media(base64.b64encode(frame).decode())) for frame in frames
    ]
    assert built == expected
    assert json.loads(built[0][4:])["media"]["payload"] == PAYLOAD


def test_audio_frames_follow_a_change_of_stream() -> None:
    """Built around another stream's ids, frames carry that stream's id."""
    builder = AudioFrames()
    first, second = TwilioFraming(), TwilioFraming()
    first.decode(TWILIO_START)
    second.decode(TWILIO_START.replace("MZ123", "MZ999"))
    frame = [bytes(160)]
    assert b"MZ123" in next(builder.build(first, frame))
    assert b"MZ999" in next(builder.build(second, frame))
