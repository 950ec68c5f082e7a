"""Prompts of the toy world: "a {colour} {object}" (view suffixes come from `threedistill.prompting`)."""

from __future__ import annotations


def subject_prompt(colour: str, obj: str) -> str:
    return f"a {colour} {obj}"
