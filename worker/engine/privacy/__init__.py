"""Privacy for federated training: differential privacy and its accounting, secure aggregation."""
