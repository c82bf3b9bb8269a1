"""Builders for guest languages other than C: each module has build(folder, fn, echo) -> Path."""
