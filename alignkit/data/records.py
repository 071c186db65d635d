"""Canonical record types every loader produces and every trainer consumes.

A prompt is either plain text or a list of chat messages; completions (chosen, rejected, output)
are plain text. Fields beyond the canonical ones are ignored, so ids and metadata may ride along.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


class Message(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    role: Literal["system", "user", "assistant", "tool"]
    content: str


Prompt = Union[str, list[Message]]


def prompt_json(prompt: Prompt) -> str | list[dict[str, str]]:
    """The prompt in a JSON-serialisable form: text, or a list of {"role", "content"} dicts."""
    if isinstance(prompt, str):
        return prompt
    return [m.model_dump() if isinstance(m, Message) else {"role": m["role"], "content": m["content"]} for m in prompt]


def prompt_key(prompt: Prompt) -> str:
    """A stable text key for a prompt (text as is; a message list as "messages:" + canonical JSON), e.g. to
    group records by prompt."""
    import json

    value = prompt_json(prompt)
    return value if isinstance(value, str) else "messages:" + json.dumps(value, sort_keys=True, ensure_ascii=False)


def _completion_text(value: object) -> object:
    """Accept a completion as text or as a one-turn assistant message list (TRL's conversational form)."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == "assistant":
        return value[0].get("content")
    return value


def _not_blank(value: str) -> str:
    """Reject empty and whitespace-only text: a blank completion trains the model to say nothing."""
    if not value.strip():
        raise ValueError("must not be empty or whitespace only")
    return value


Completion = Annotated[str, BeforeValidator(_completion_text), AfterValidator(_not_blank)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @field_validator("prompt", mode="before", check_fields=False)
    @classmethod
    def _prompt_not_empty(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be a non-empty string or a non-empty list of messages")
        if isinstance(value, list) and not value:
            raise ValueError("must be a non-empty string or a non-empty list of messages")
        return value


class PreferencePair(_Record):
    """A prompt with a preferred and a dispreferred completion (DPO, distillation)."""

    kind: Literal["preference"] = "preference"
    prompt: Prompt
    chosen: Completion
    rejected: Completion
    margin: float | None = None  # how much better chosen is (reward-model margin), when the data says

    @model_validator(mode="after")
    def _distinct(self) -> "PreferencePair":
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected are identical")
        return self


class JudgmentTriple(_Record):
    """An instruction, a response and a natural-language judgment of it (CUT).

    `judgment=None` or `score >= 7` marks a positive (satisfactory) response, as in the official CUT code.
    """

    kind: Literal["judgment"] = "judgment"
    instruction: Annotated[str, AfterValidator(_not_blank)]
    input: str | None = ""
    output: Annotated[str, AfterValidator(_not_blank)]
    judgment: str | None = None
    score: float | None = None

    @property
    def is_positive(self) -> bool:
        """True for Align-P examples: no judgment, or a score of 7 or more."""
        return self.judgment is None or (self.score is not None and self.score >= 7)

    @property
    def prompt(self) -> str:
        """The instruction with a non-empty input folded in after a newline (official CUT code)."""
        return f"{self.instruction}\n{self.input}" if self.input else self.instruction


class NegativeOnly(_Record):
    """A prompt with a dispreferred completion only (D2O)."""

    kind: Literal["negative"] = "negative"
    prompt: Prompt
    rejected: Completion


class PromptOnly(_Record):
    """A prompt to sample from (online methods, generation, distillation)."""

    kind: Literal["prompt"] = "prompt"
    prompt: Prompt


class SFTExample(_Record):
    """A prompt with a target completion (supervised fine-tuning)."""

    kind: Literal["sft"] = "sft"
    prompt: Prompt
    completion: Completion


class UnpairedPreference(_Record):
    """A prompt with one completion labelled desirable (`label: true`, thumbs-up) or undesirable (KTO).

    TRL's unpaired preference format (`trl-lib/kto-mix-14k`): prompt and completion as text or messages."""

    kind: Literal["unpaired"] = "unpaired"
    prompt: Prompt
    completion: Completion
    label: bool


class JudgeItem(BaseModel):
    """One answer to be judged, with optional reference answer(s) and a human label."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    kind: Literal["judge"] = "judge"
    question: str = Field(min_length=1)
    answer: str
    reference: str | list[str] | None = None
    model: str | None = None
    human_label: str | int | float | bool | None = None


Record = Union[PreferencePair, JudgmentTriple, NegativeOnly, PromptOnly, SFTExample, UnpairedPreference, JudgeItem]


def to_negative(record: Record) -> NegativeOnly:
    """Use a preference pair as negatives-only data by dropping `chosen` (D2O)."""
    if isinstance(record, NegativeOnly):
        return record
    if isinstance(record, PreferencePair):
        return NegativeOnly(prompt=record.prompt, rejected=record.rejected)
    raise TypeError(f"cannot turn a {record.kind} record into a negatives-only record")


def unpair(pair: PreferencePair) -> list[UnpairedPreference]:
    """A preference pair as two unpaired examples: chosen desirable, rejected undesirable (TRL's
    `unpair_preference_dataset`)."""
    return [UnpairedPreference(prompt=pair.prompt, completion=pair.chosen, label=True),
            UnpairedPreference(prompt=pair.prompt, completion=pair.rejected, label=False)]


def to_prompt(record: Record) -> PromptOnly:
    """Keep only the prompt of any prompt-bearing record."""
    if isinstance(record, JudgeItem):
        return PromptOnly(prompt=record.question)
    return PromptOnly(prompt=record.prompt)


def convert(record: Record, want: type) -> Record:
    """`record` as the record type `want`, where one stands in for another: a preference pair as a
    negatives-only record (its `chosen` dropped), any prompt-bearing record as a prompt. TypeError otherwise."""
    if isinstance(record, want):
        return record
    if want is NegativeOnly:
        return to_negative(record)
    if want is PromptOnly:
        return to_prompt(record)
    raise TypeError(f"a {record.kind} record cannot stand in for a {want.__name__} record")


def stand_ins(record: Record, want: type) -> list[Record]:
    """The records of type `want` that `record` stands for: itself or its `convert`ed form, or, for a preference
    pair where unpaired examples are wanted, its two halves (`unpair`). TypeError where none can stand in."""
    if want is UnpairedPreference and isinstance(record, PreferencePair):
        return list(unpair(record))
    return [convert(record, want)]
