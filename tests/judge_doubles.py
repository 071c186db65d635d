"""A scripted generation backend for judge tests, and a reader of a judge prompt's fields."""

from alignkit.generation.base import Completion, GenerationResult


class Scripted:
    """A generation backend double: answers each prompt with `respond(prompt)` and records the prompts."""

    def __init__(self, respond):
        self.respond = respond
        self.prompts = []

    def generate(self, prompts, params):
        self.prompts += list(prompts)
        return [GenerationResult(p, [Completion(self.respond(p), [], "stop")]) for p in prompts]


def prompt_field(prompt, name, next_name):
    """The text of a judge prompt's `name:` section, up to the `next_name` section."""
    return prompt.split(f"{name}:\n", 1)[1].split(f"\n\n{next_name}", 1)[0]
