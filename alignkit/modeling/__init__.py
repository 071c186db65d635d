"""Models as alignkit loads and runs them: one loader for the policy and every frozen model, content
fingerprints for cache keys, token batches, and chunked per-token log-probs and top-k distributions."""
