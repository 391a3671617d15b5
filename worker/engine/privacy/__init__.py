"""Privacy of the federated rounds: secure aggregation, differential-privacy noise and its accounting."""
