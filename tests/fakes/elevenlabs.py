"""A local ElevenLabs: the streaming text-to-speech endpoint, returning mu-law in chunks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes._server import FakeServer, split_evenly

API_KEY = "xi-test-elevenlabs-key-0001"


@dataclass
class TtsRequest:
    """One recorded ``POST /v1/text-to-speech/{voice}/stream``."""

    voice_id: str
    output_format: str | None
    api_key: str | None
    body: dict[str, Any]


class FakeElevenLabs(FakeServer):
    """``base_url`` is the origin (the client appends ``/v1/...``)."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.audio = bytes(range(256)) * 16  # 4096 bytes of distinct mu-law codes
        self.chunks = 4
        self.chunk_delay = 0.01
        self.status = 200
        self.hold: asyncio.Event | None = None
        """When set to an Event, the body pauses after its first chunk until it is set."""
        self.requests: list[TtsRequest] = []
        self.completed = 0
        """Responses whose body was fully written."""
        super().__init__()

    @property
    def base_url(self) -> str:
        return self.origin

    async def _before_close(self) -> None:
        if self.hold is not None:
            self.hold.set()

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/text-to-speech/{voice}/stream", self._stream)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            TtsRequest(
                voice_id=request.match_info["voice"],
                output_format=request.query.get("output_format"),
                api_key=request.headers.get("xi-api-key"),
                body=await request.json(),
            )
        )
        await self.notify()
        if request.headers.get("xi-api-key") != self.api_key:
            return web.json_response(
                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}},
                status=401,
            )
        if self.status != 200:
            return web.json_response({"detail": {"message": "fake failure"}}, status=self.status)
        response = web.StreamResponse(headers={"Content-Type": "audio/basic"})
        await response.prepare(request)
        for index, chunk in enumerate(split_evenly(self.audio, self.chunks)):
            if index == 1 and self.hold is not None:
                await self.hold.wait()
            if index:
                await asyncio.sleep(self.chunk_delay)
            await response.write(chunk)
        await response.write_eof()
        self.completed += 1
        await self.notify()
        return response
