"""alqa on Dagster: a thin adapter over alqa_core."""
