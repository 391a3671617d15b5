"""Privacy of the federated rounds: secure aggregation of the site updates."""
