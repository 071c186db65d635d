"""One generation interface, several backends: `hf` (transformers), `vllm` (in-process engine), `openai` (HTTP).

`load_generator(model, backend="auto")` picks one; see docs/generation.md.
"""

from alignkit.generation.backends import load_generator
from alignkit.generation.base import Completion, GenerationError, GenerationResult, Generator, SamplingParams
from alignkit.generation.hf import HFGenerator

__all__ = ["Completion", "GenerationError", "GenerationResult", "Generator", "HFGenerator", "SamplingParams", "load_generator"]
