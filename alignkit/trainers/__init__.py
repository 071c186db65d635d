"""One module per training method; each defines `Args` (its method_args), a pure loss and `build_method`.

`METHODS` maps a recipe's `method:` to its module. Modules are imported only when used, so reading a
recipe stays fast.
"""

METHODS: dict[str, str] = {
    "dpo": "alignkit.trainers.dpo",
}
