"""Outcomes, stop reasons and refusals print and format as their label values, on every Python."""

from __future__ import annotations

import pytest

from aiothreads._outcomes import Outcome, Refusal, StopReason


@pytest.mark.parametrize("word", [*Outcome, *StopReason, *Refusal], ids=str)
def test_a_word_prints_and_formats_as_its_value(word: Outcome | StopReason | Refusal) -> None:
    assert str(word) == word.value
    assert f"{word}" == word.value
    assert f"{word:>20}" == f"{word.value:>20}"
    assert "{}|{:<12}|".format(word, word) == f"{word.value}|{word.value:<12}|"  # noqa: UP032
