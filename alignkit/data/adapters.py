"""Adapters from public dataset schemas (and the canonical ones) onto alignkit's record types.

Each adapter maps one raw row (a dict) to a record, or to `None` when the row is deliberately
filtered out (e.g. a PKU-SafeRLHF pair where both responses are safe has no negative). Malformed
rows raise `ValueError` / pydantic `ValidationError`; the loader adds file and line to the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from alignkit.data.records import (
    JudgeItem,
    JudgmentTriple,
    Message,
    NegativeOnly,
    PreferencePair,
    PromptOnly,
    Record,
    SFTExample,
    UnpairedPreference,
    unpair,
)


@dataclass(frozen=True)
class Adapter:
    """How one named format turns raw rows into records."""

    name: str
    record_type: type
    required: tuple[str, ...]
    convert: Callable[[dict[str, Any]], Record | list[Record] | None]  # a list: one row gives several records
    description: str
    filter_reason: str = ""
    guess: bool = True  # False: never detected from the fields (it re-reads another format's schema)


def _canonical(record_type: type) -> Callable[[dict[str, Any]], Record]:
    return lambda row: record_type.model_validate(row)


def _need(row: dict[str, Any], *fields: str) -> None:
    missing = [f for f in fields if f not in row or row[f] is None]
    if missing:
        raise ValueError(f"field {missing[0]!r}: required field is missing")


# -- Anthropic HH-RLHF -------------------------------------------------------------------------

HH_HUMAN, HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def parse_hh_transcript(text: str, field: str) -> list[Message]:
    """Split an HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") into chat messages."""
    if not isinstance(text, str) or HH_ASSISTANT not in text:
        raise ValueError(f"field {field!r}: expected an HH-RLHF transcript containing '\\n\\nAssistant:'")
    messages: list[Message] = []
    rest = text
    while rest:
        h, a = rest.find(HH_HUMAN), rest.find(HH_ASSISTANT)
        starts = [(i, tag) for i, tag in ((h, HH_HUMAN), (a, HH_ASSISTANT)) if i >= 0]
        if not starts:
            break
        start, tag = min(starts)
        rest = rest[start + len(tag):]
        nxt = [i for i in (rest.find(HH_HUMAN), rest.find(HH_ASSISTANT)) if i >= 0]
        end = min(nxt) if nxt else len(rest)
        role = "user" if tag == HH_HUMAN else "assistant"
        messages.append(Message(role=role, content=rest[:end].strip()))
        rest = rest[end:]
    if not messages or messages[-1].role != "assistant":
        raise ValueError(f"field {field!r}: the transcript must end with an Assistant turn")
    return messages


def _hh_rlhf(row: dict[str, Any]) -> PreferencePair:
    _need(row, "chosen", "rejected")
    chosen = parse_hh_transcript(row["chosen"], "chosen")
    rejected = parse_hh_transcript(row["rejected"], "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise ValueError("fields 'chosen'/'rejected': the two transcripts do not share the dialogue before the last Assistant turn")
    return PreferencePair(prompt=chosen[:-1], chosen=chosen[-1].content, rejected=rejected[-1].content)


# -- PKU-SafeRLHF -------------------------------------------------------------------------------


def _pku_ids(row: dict[str, Any]) -> int:
    _need(row, "prompt", "response_0", "response_1", "safer_response_id")
    safer = row["safer_response_id"]
    if safer not in (0, 1):
        raise ValueError(f"field 'safer_response_id': expected 0 or 1, got {safer!r}")
    return int(safer)


def _pku_saferlhf(row: dict[str, Any]) -> PreferencePair:
    safer = _pku_ids(row)
    return PreferencePair(prompt=row["prompt"], chosen=row[f"response_{safer}"], rejected=row[f"response_{1 - safer}"])


def _pku_saferlhf_negatives(row: dict[str, Any]) -> NegativeOnly | None:
    """The less safe response of pairs with at least one unsafe response (D2O spec, inferred rule)."""
    safer = _pku_ids(row)
    _need(row, "is_response_0_safe", "is_response_1_safe")
    if row["is_response_0_safe"] and row["is_response_1_safe"]:
        return None
    return NegativeOnly(prompt=row["prompt"], rejected=row[f"response_{1 - safer}"])


# -- UltraFeedback binarized --------------------------------------------------------------------


def _ultrafeedback(row: dict[str, Any]) -> PreferencePair:
    _need(row, "chosen", "rejected")
    sides = {}
    for field in ("chosen", "rejected"):
        msgs = row[field]
        if not isinstance(msgs, list) or len(msgs) < 2:
            raise ValueError(f"field {field!r}: expected a list of messages ending with the assistant turn")
        parsed = [Message.model_validate(m) for m in msgs]
        if parsed[-1].role != "assistant":
            raise ValueError(f"field {field!r}: the last message must be from the assistant")
        sides[field] = parsed
    if sides["chosen"][:-1] != sides["rejected"][:-1]:
        raise ValueError("fields 'chosen'/'rejected': the conversations differ before the last assistant turn")
    return PreferencePair(prompt=sides["chosen"][:-1], chosen=sides["chosen"][-1].content, rejected=sides["rejected"][-1].content)


# -- judgments: Shepherd, CUT, Alpaca ------------------------------------------------------------


def _shepherd(row: dict[str, Any]) -> JudgmentTriple:
    _need(row, "question", "answer", "feedback")
    # CUT's converter: every Shepherd example is a negative with score 1.
    return JudgmentTriple(instruction=row["question"], input="", output=row["answer"], judgment=row["feedback"], score=1)


def _messages_sft(row: dict[str, Any]) -> SFTExample:
    _need(row, "messages")
    msgs = row["messages"]
    if not isinstance(msgs, list) or len(msgs) < 2:
        raise ValueError("field 'messages': expected a list of messages ending with the assistant turn")
    parsed = [Message.model_validate(m) for m in msgs]
    if parsed[-1].role != "assistant":
        raise ValueError("field 'messages': the last message must be from the assistant")
    return SFTExample(prompt=parsed[:-1], completion=parsed[-1].content)


def _alpaca(row: dict[str, Any]) -> SFTExample:
    _need(row, "instruction", "output")
    extra = row.get("input") or ""
    prompt = f"{row['instruction']}\n{extra}" if extra else row["instruction"]
    return SFTExample(prompt=prompt, completion=row["output"])


# -- unpaired feedback (KTO) ---------------------------------------------------------------------


def _unpaired_preference(row: dict[str, Any]) -> list[UnpairedPreference]:
    """A preference row (prompt, chosen, rejected) as two unpaired examples (TRL's `unpair_preference_dataset`)."""
    return unpair(PreferencePair.model_validate(row))


ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (
        Adapter("preference", PreferencePair, ("prompt", "chosen", "rejected"), _canonical(PreferencePair), "canonical: prompt (text or messages), chosen, rejected"),
        Adapter("judgment", JudgmentTriple, ("instruction", "output"), _canonical(JudgmentTriple), "canonical: instruction, input, output, judgment (null = positive), score"),
        Adapter("negative", NegativeOnly, ("prompt", "rejected"), _canonical(NegativeOnly), "canonical: prompt, rejected"),
        Adapter("prompt", PromptOnly, ("prompt",), _canonical(PromptOnly), "canonical: prompt"),
        Adapter("sft", SFTExample, ("prompt", "completion"), _canonical(SFTExample), "canonical: prompt, completion"),
        Adapter("judge", JudgeItem, ("question", "answer"), _canonical(JudgeItem), "canonical: question, answer, reference, model, human_label"),
        Adapter("hh_rlhf", PreferencePair, ("chosen", "rejected"), _hh_rlhf, "Anthropic HH-RLHF transcripts; the shared dialogue becomes the prompt"),
        Adapter("pku_saferlhf", PreferencePair, ("prompt", "response_0", "response_1", "safer_response_id"), _pku_saferlhf, "PKU-SafeRLHF as preference pairs: safer response chosen"),
        Adapter("pku_saferlhf_negatives", NegativeOnly, ("prompt", "response_0", "response_1", "safer_response_id", "is_response_0_safe"), _pku_saferlhf_negatives, "PKU-SafeRLHF negatives: the less safe response of pairs with an unsafe one", filter_reason="both responses safe"),
        Adapter("ultrafeedback", PreferencePair, ("chosen", "rejected", "score_chosen"), _ultrafeedback, "UltraFeedback-binarized message lists"),
        Adapter("shepherd", JudgmentTriple, ("question", "answer", "feedback"), _shepherd, "Shepherd question/answer/feedback as negative judgment triples"),
        Adapter("cut", JudgmentTriple, ("instruction", "output", "judgment"), _canonical(JudgmentTriple), "CUT judgment JSON: instruction, input, output, judgment (null = positive)"),
        Adapter("alpaca", SFTExample, ("instruction", "input", "output"), _alpaca, "Alpaca instruction/input/output as SFT examples"),
        Adapter("chat_preference", PreferencePair, ("chosen", "rejected"), _ultrafeedback, "chosen/rejected message lists that "
                "share the conversation before the last assistant turn (argilla/dpo-mix-7k, ...)", guess=False),
        Adapter("kto", UnpairedPreference, ("prompt", "completion", "label"), _canonical(UnpairedPreference),
                "canonical unpaired feedback (KTO): prompt, completion (text or messages), label (true = desirable); "
                "TRL's unpaired preference format, e.g. trl-lib/kto-mix-14k"),
        Adapter("unpaired_preference", UnpairedPreference, ("prompt", "chosen", "rejected"), _unpaired_preference,
                "preference pairs split into two unpaired examples: chosen desirable, rejected undesirable", guess=False),
        Adapter("messages", SFTExample, ("messages",), _messages_sft, "a conversation (messages) ending with the assistant "
                "turn, as an SFT example (HuggingFaceH4/deita-10k-v0-sft, UltraChat)"),
    )
}


def detect_format(row: dict[str, Any]) -> str:
    """Guess the format of a row: the adapter with the most required fields all present."""
    # Variants that re-read another format's schema (e.g. PKU negatives) are never guessed.
    fits = [a for a in ADAPTERS.values() if all(f in row for f in a.required) and a.guess and not a.name.endswith("_negatives")]
    if not fits:
        raise ValueError(f"cannot tell the format from the fields {sorted(row)}; pass --format (one of {', '.join(ADAPTERS)})")
    return max(fits, key=lambda a: len(a.required)).name
