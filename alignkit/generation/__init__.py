"""One generation interface, several backends: `HFGenerator` (transformers) now."""

from alignkit.generation.base import Completion, GenerationResult, Generator, SamplingParams
from alignkit.generation.hf import HFGenerator

__all__ = ["Completion", "GenerationResult", "Generator", "HFGenerator", "SamplingParams"]
