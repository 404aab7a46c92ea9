"""The phrases table notes share (cnnvis.notes)."""

from cnnvis.notes import smoke_note


def test_smoke_note_ends_only_a_smoke_runs_notes_and_says_what_it_cut():
    assert smoke_note(False) == smoke_note(False, "a sliver of the data") == ""
    assert smoke_note(True) == " SMOKE RUN."
    assert smoke_note(True, "2 folds, 2 epochs") == " SMOKE RUN: 2 folds, 2 epochs."
