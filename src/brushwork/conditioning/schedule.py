"""A prompt (one side of a generation) -> conditioning for every sampling step.

A1111's flow (`prompt_parser.get_multicond_learned_conditioning` for the positive prompt,
`get_learned_conditioning` for the negative one): the positive prompt is split at ``AND`` into
weighted parts (the negative prompt is not: its ``AND`` stays text); each part's prompt-editing
and alternation schedule gives ``(end_step, text)`` entries; the texts of one part's schedule are
encoded together (`PromptEncoder.encode_batch`), each distinct text through the text encoders
once. At sampler step ``k`` (counted from 0) a part uses the first entry with ``k <= end_step``.

SDXL's empty negative prompt is all zeros, as in A1111 (`force_zero_embeddings`): when every
text of the negative prompt's schedule is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

from brushwork.conditioning.encoder import Conditioning, PromptEncoder
from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily
from brushwork.prompt import prompt_schedule, split_and

Schedule = tuple[tuple[int, Conditioning], ...]


@dataclass(frozen=True, eq=False)
class ScheduledPrompt:
    """One side (positive or negative) of a generation, for all steps.

    `parts`: ``((schedule, weight), ...)``, one per ``AND`` part; a schedule is
    ``((end_step, conditioning), ...)`` sorted by step, like A1111's.
    """

    parts: tuple[tuple[Schedule, float], ...]

    def at_step(self, step: int) -> list[tuple[Conditioning, float]]:
        """Each part's conditioning and weight at sampler step `step` (counted from 0).

        As A1111's `reconstruct_cond_batch`: the first entry with ``step <= end_step``; past
        the last entry, the first one.
        """
        return [(_entry_at(schedule, step), weight) for schedule, weight in self.parts]

    @property
    def max_chunks(self) -> int:
        """The most chunks any of its conditionings has."""
        return max(cond.chunks for schedule, _ in self.parts for _, cond in schedule)


def _entry_at(schedule: Schedule, step: int) -> Conditioning:
    for end_step, conditioning in schedule:
        if step <= end_step:
            return conditioning
    return schedule[0][1]


def schedule_prompt(
    encoder: PromptEncoder,
    prompt: str,
    steps: int,
    *,
    hires_steps: int | None = None,
    allow_and: bool = True,
    negative: bool | None = None,
    use_old_scheduling: bool = False,
) -> ScheduledPrompt:
    """Encode `prompt` for `steps` sampler steps (extra-network tags already removed).

    Positive prompts: ``allow_and=True``. Negative prompts: ``allow_and=False`` (A1111 does not
    split them at ``AND``); `negative` defaults to ``not allow_and`` and turns on SDXL's zeroed
    empty negative. `hires_steps`: the schedule of a hires-fix pass (see
    `prompt.prompt_schedule`); `use_old_scheduling` is A1111's "Old prompt editing timelines".
    """
    if steps < 1:
        raise ConfigError(f"steps must be 1 or more, not {steps}")
    is_negative = (not allow_and) if negative is None else negative
    parts = split_and(prompt) if allow_and else [(prompt, 1.0)]
    scheduled = []
    for text, weight in parts:
        entries = prompt_schedule(text, steps, hires_steps, use_old_scheduling=use_old_scheduling)
        texts = [entry_text for _, entry_text in entries]
        if is_negative and encoder.model.family is BaseFamily.SDXL and not any(texts):
            conds = [encoder.zeros()] * len(texts)
        elif len(set(texts)) == 1:
            conds = [encoder.encode(texts[0])] * len(texts)
        else:
            conds = encoder.encode_batch(texts)
        schedule = tuple((end, cond) for (end, _), cond in zip(entries, conds, strict=True))
        scheduled.append((schedule, weight))
    return ScheduledPrompt(tuple(scheduled))
