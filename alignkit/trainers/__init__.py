"""One module per training method; each defines `Args` (its method_args), a pure loss and `Method`.

See `alignkit.engine.contract` for the contract (`AlignMethod`), `docs/architecture.md` and `docs/engine.md`
for how to add a method. The `method:` names are registered in `alignkit.config.registry.METHODS`; modules
are imported only when used (by the registry, by name), so reading a recipe stays fast.
"""
