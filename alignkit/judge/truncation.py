"""How an exam-taker's response is cut before a reference judge reads it (Judging the Judges' `truncate` presets).

The official pipeline (`llm_eval/helpers/misc/io.py::truncate_response`, applied by
`benchmark/base_benchmark.py::compute_results` before **every** evaluator, LLM judges included) cuts the
response at the first occurrence of any of the preset's strings and then strips surrounding whitespace. Every
evaluator of the paper's final configuration (`configs/benchmarks/final_all_models_*.json`) uses
`newlinequestion`: a few-shot exam-taker that runs on into the next "\\nQ:" is judged on its answer only, and
" Paris" matches the reference "Paris" exactly.
"""

from __future__ import annotations

TRUNCATIONS: dict[str, tuple[str, ...]] = {
    "newlinequestion": ("\nQ:",),      # the paper's setting for every judge
    "newlinequestion2": ("\nQuestion:",),
    "newline": ("\n",),
    "skip": (),                        # no cut; still stripped, as in the official code
}
DEFAULT_TRUNCATION = "newlinequestion"


def check_truncation(name: str) -> str:
    """`name` if it is a known preset; else ValueError listing them."""
    if name not in TRUNCATIONS:
        raise ValueError(f"unknown truncation {name!r}; known: {', '.join(TRUNCATIONS)}")
    return name


def truncate_response(response: str, truncation: str = DEFAULT_TRUNCATION) -> str:
    """The response up to the first occurrence of any of the preset's strings, stripped of surrounding whitespace."""
    end = len(response)
    for marker in TRUNCATIONS[check_truncation(truncation)]:
        found = response.find(marker)
        if found != -1:
            end = min(end, found)
    return response[:end].strip()
