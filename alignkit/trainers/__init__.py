"""One module per training method; each defines `Args` (its method_args), a pure loss and `Method`.

See `alignkit.engine.method` for the contract and `docs/engine.md` for how to add a method. The
`method:` names are registered in `alignkit.config.METHODS`; modules are imported only when used, so
reading a recipe stays fast.
"""
