"""Splits a reply into sentences so the first one can be synthesised (and heard) first.

TTS latency grows with the input; speaking "Sure." while "Here is the longer part..." is still
being synthesised cuts the silence after the caller stops talking. Splits after ``.``, ``!``,
``?``, ``…`` and their CJK forms when followed by space or the end; keeps common abbreviations
("Dr.", "e.g.") and decimals ("3.5") intact; breaks over-long sentences at a comma or a space.
"""

from __future__ import annotations

import re

MAX_SENTENCE_CHARS = 240
"""Longer sentences are broken further: vendors take longer to start on long input."""

# Words whose trailing period does not end a sentence ("Dr. Smith", "e.g. this").
_ABBREVIATIONS = frozenset(
    {
        *("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc"),
        *("e.g", "i.e", "a.m", "p.m", "approx"),
    }
)
# Latin enders (plus closing quotes/brackets) need a following space; CJK enders do not.
_BOUNDARY = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s|$)|[\u3002\uff01\uff1f]+")
_SOFT_BREAK = re.compile(r"(?<=[,;:])\s+")


def _ends_with_abbreviation(piece: str) -> bool:
    """True when ``piece`` ends in "Dr." or "e.g." style words, or a single initial ("J.")."""
    if not piece.endswith("."):
        return False
    word = piece[:-1].rsplit(None, 1)[-1].lower() if piece[:-1].strip() else ""
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _break_long(sentence: str, limit: int) -> list[str]:
    """Break one sentence into pieces of at most ``limit`` characters, at commas if possible."""
    pieces: list[str] = []
    current = ""
    for part in _SOFT_BREAK.split(sentence):
        for word in part.split(" ") if len(part) > limit else [part]:
            candidate = f"{current} {word}" if current else word
            if len(candidate) <= limit or not current:
                current = candidate
            else:
                pieces.append(current)
                current = word
    if current:
        pieces.append(current)
    return pieces


def _pieces(text: str) -> list[str]:
    """Cut at every sentence end (punctuation plus closing quotes), keeping the punctuation."""
    cuts = [m.end() for m in _BOUNDARY.finditer(text)]
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Split ``text`` into speakable sentences, in order, without empty pieces.

    Args:
        text: the reply to speak.
        max_chars: sentences longer than this are broken at commas, then at spaces.

    Returns:
        The pieces, stripped; joining them with spaces gives back the words of ``text``.
    """
    sentences: list[str] = []
    pending = ""
    for raw in _pieces(text):
        piece = f"{pending} {raw.strip()}" if pending else raw.strip()
        if not piece:
            continue
        if _ends_with_abbreviation(piece):
            pending = piece
            continue
        pending = ""
        sentences.extend(_break_long(piece, max_chars) if len(piece) > max_chars else [piece])
    if pending:
        sentences.extend(_break_long(pending, max_chars) if len(pending) > max_chars else [pending])
    return sentences


STREAM_MAX_CHARS = 200
"""A streamed reply with no sentence end this long is cut anyway (SPEC 11), at a space."""
# A sentence end in a stream: the punctuation must be followed by whitespace (a "." at the end
# of what has arrived may be "3." of "3.5"), or a newline, or a CJK ender.
_STREAM_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)|\n|[\u3002\uff01\uff1f]+")


class SentenceStream:
    """Cuts a reply that arrives in pieces (an LLM stream) into sentences as soon as each ends.

    A sentence ends at ``.``, ``!`` or ``?`` followed by whitespace, at a newline, or once 200
    characters have arrived without an end (cut at the last space). "Dr. Smith" and "e.g. this"
    are not cut, as in :func:`split_sentences`.
    """

    __slots__ = ("_buffer", "max_chars")

    def __init__(self, max_chars: int = STREAM_MAX_CHARS) -> None:
        self._buffer = ""
        self.max_chars = max_chars

    def push(self, delta: str) -> list[str]:
        """Add the next piece of text; return the sentences it completed, in order."""
        self._buffer += delta
        out: list[str] = []
        while (sentence := self._next()) is not None:
            if sentence:
                out.append(sentence)
        return out

    def flush(self) -> str:
        """The text after the last complete sentence (the stream ended), stripped."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest

    def _next(self) -> str | None:
        buffer = self._buffer = self._buffer.lstrip()
        for match in _STREAM_END.finditer(buffer):
            end = match.end()
            piece = buffer[:end].strip()
            if len(piece) > self.max_chars:
                break
            if match.group() != "\n" and _ends_with_abbreviation(piece):
                continue
            self._buffer = buffer[end:]
            return piece
        if len(buffer) <= self.max_chars:
            return None
        cut = buffer.rfind(" ", 0, self.max_chars + 1)
        if cut <= 0:
            cut = self.max_chars
        self._buffer = buffer[cut:]
        return buffer[:cut].strip()
