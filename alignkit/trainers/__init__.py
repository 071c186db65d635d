"""One module per training method; each defines `Args` (its method_args), a pure loss and `Method`.

See `alignkit.engine.method` for what a `Method` provides.

`METHODS` maps a recipe's `method:` to its module. Modules are imported only when used, so reading a
recipe stays fast.
"""

METHODS: dict[str, str] = {
    "cut": "alignkit.trainers.cut",
    "d2o": "alignkit.trainers.d2o",
    "dpo": "alignkit.trainers.dpo",
    "sft": "alignkit.trainers.sft",
}
