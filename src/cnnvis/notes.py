"""Phrases that several experiments' table notes share, so that they read alike."""


def smoke_note(smoke: bool, what: str = "") -> str:
    """' SMOKE RUN.' (or ' SMOKE RUN: what.') to end the notes of a smoke run; nothing otherwise."""
    if not smoke:
        return ""
    return f" SMOKE RUN: {what}." if what else " SMOKE RUN."
