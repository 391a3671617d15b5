"""Privacy: secure aggregation, differential-privacy noise and its accounting."""
