"""Where the text that comes with a video enters a clip's prompt (the LM stage's half; the
decode half, which finds that text, is ``stages.speech``).

``render_prompt``: the prompt with the clip's speech and the video's manifest context in
place, both cut to the token budget; what was cut is counted, not hidden. Nothing here
imports PyAV: the LM actors never open a media file.

A placeholder the user puts in a prompt (``{speech}``, ``{context}``) is filled in place (with
nothing when there is no such text); otherwise each text that exists is added after the prompt
through its template. Only those two exact placeholders are replaced: any other brace in a
prompt stays as written.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.core.config import ContextConfig

SPEECH = "{speech}"
CONTEXT = "{context}"


@dataclass(frozen=True)
class Rendered:
    prompt: str
    context: str
    """What the prompt was given (manifest context, then speech, after the cut)."""
    context_tokens: int
    cut_tokens: int


def render_prompt(
    text: str, speech: str, video_context: str, config: ContextConfig, tokenizer
) -> Rendered:
    """``text`` with the video's context in place, within ``config.max_tokens`` tokens.

    The manifest context (short: a title, a description) is kept first; the speech gets the
    rest of the budget. Each keeps its beginning: a caption of a clip is about what is said
    first as much as last, and a cut in the middle of a cue would read as speech."""
    budget = config.max_tokens
    pieces = []
    cut = 0
    for piece in (video_context, speech):
        ids = _ids(tokenizer, piece) if piece else []
        kept = ids[: max(0, budget)]
        budget -= len(kept)
        cut += len(ids) - len(kept)
        if len(kept) < len(ids):
            piece = tokenizer.decode(kept, skip_special_tokens=True).strip()
        pieces.append(piece if kept else "")
    video_context, speech = pieces
    prompt = text
    blocks = []
    for placeholder, value, template in (
        (CONTEXT, video_context, config.video_template),
        (SPEECH, speech, config.speech_template),
    ):
        if placeholder in prompt:
            prompt = prompt.replace(placeholder, value)
        elif value:
            blocks.append(template.replace(placeholder, value))
    if blocks:
        prompt = "\n\n".join([prompt, *blocks])
    given = "\n".join(p for p in (video_context, speech) if p)
    return Rendered(prompt, given, len(_ids(tokenizer, given)) if given else 0, cut)


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
