"""Sentence splitting for speak-the-first-sentence-first TTS."""

from __future__ import annotations

import pytest

from daemon.speech.sentences import STREAM_MAX_CHARS, SentenceStream, split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there! How are you? I am fine.", ["Hello there!", "How are you?", "I am fine."]),
        ("Dr. Smith pays 3.5 dollars. OK.", ["Dr. Smith pays 3.5 dollars.", "OK."]),
        ('He said "hi." Then he left.', ['He said "hi."', "Then he left."]),
        ("Bring e.g. a pen. And J. Doe too.", ["Bring e.g. a pen.", "And J. Doe too."]),
        ("Wait... what?!", ["Wait...", "what?!"]),
        ("no punctuation at all", ["no punctuation at all"]),
        ("你好。我很好\uff01", ["你好。", "我很好\uff01"]),
        ("  One.\n\nTwo.  ", ["One.", "Two."]),
        ("", []),
        ("   ", []),
    ],
)
def test_split(text: str, expected: list[str]) -> None:
    """Sentences end at terminal punctuation, not at abbreviations or decimals."""
    assert split_sentences(text) == expected


def test_long_sentence_is_broken_at_commas_first() -> None:
    """Over-long sentences are cut at a comma, each piece within the limit."""
    text = "First part of a long sentence, second part that goes on, and a third part."
    pieces = split_sentences(text, max_chars=40)
    assert pieces == [
        "First part of a long sentence,",
        "second part that goes on,",
        "and a third part.",
    ]


def test_long_run_without_commas_is_broken_at_spaces() -> None:
    """Without commas, pieces break between words, and no word is lost."""
    text = " ".join(f"word{i}" for i in range(60)) + "."
    pieces = split_sentences(text, max_chars=50)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces) == text


def test_words_are_preserved() -> None:
    """Joining the pieces gives back every word in order."""
    text = "Yes. Mr. Brown will call at 5.30 p.m. tomorrow! Is that fine? Great."
    assert " ".join(split_sentences(text)).split() == text.split()


def _stream(pieces: list[str]) -> list[list[str]]:
    """What each pushed piece completed, then the flushed rest as a last list."""
    stream = SentenceStream()
    out = [stream.push(piece) for piece in pieces]
    rest = stream.flush()
    return [*out, [rest] if rest else []]


def test_stream_cuts_at_a_sentence_end_once_whitespace_follows() -> None:
    """ "Sure." is complete only when the next piece shows a space (it could be "3.5")."""
    assert _stream(["Sure.", " It costs 3", ".5 dollars", ". Bye"]) == [
        [],
        ["Sure."],
        [],
        ["It costs 3.5 dollars."],
        ["Bye"],
    ]


def test_stream_cuts_at_newlines_and_keeps_abbreviations() -> None:
    assert _stream(["Ask Dr. Smith", "\nOr e.g. me! Ok"]) == [
        [],
        ["Ask Dr. Smith", "Or e.g. me!"],
        ["Ok"],
    ]


def test_stream_cuts_a_long_run_after_200_characters_at_a_space() -> None:
    words = ("word " * 60).strip()  # 299 characters without a sentence end
    pieces = _stream([words[:150], words[150:]])
    first = pieces[1][0]
    assert pieces[0] == [] and len(first) <= STREAM_MAX_CHARS and first.endswith("word")
    assert " ".join([first, *pieces[2]]) == words
    assert _stream(["x" * 250]) == [["x" * 200], ["x" * 50]]
