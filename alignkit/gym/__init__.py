"""The alignment gym: tiny local models (and, later, a synthetic world with a gold reward)."""
