"""The `alignkit` command line: thin. It parses, calls the run orchestrator (`alignkit.engine.orchestrator`) or a
library function, and maps errors to messages and exit codes in one place (`alignkit.cli.app.main`).

| module | subcommands |
|---|---|
| `alignkit.cli.train` | `train`, `prepare`, `recipes show` (recipe files of any shape, through the orchestrator) |
| `alignkit.cli.data` | `data validate`, `data stats` |
| `alignkit.cli.gym` | `gym tiny-model`, `pretrain`, `resave`, `make-data`, `make-judge-data`, `eval-critic` |
| `alignkit.cli.generate` | `serve`, `generate`, `bon` |
| `alignkit.cli.judge` | `judge`, `judge-serve` |
| `alignkit.cli.paligner` | `paligner synthesize`, `paligner export`, `rewrite` |
| `alignkit.cli.runs` | `export`, `report` |
| `alignkit.cli.common`, `alignkit.cli.flags` | shared options; flags that stand for recipe keys, derived from the recipe's fields |
"""

from alignkit.cli.app import build_parser, main
from alignkit.cli.common import CliError
from alignkit.engine.orchestrator import LAUNCHED_ENV, LAUNCHER_ENVS, launch_command

__all__ = ["LAUNCHED_ENV", "LAUNCHER_ENVS", "CliError", "build_parser", "launch_command", "main"]
