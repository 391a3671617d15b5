"""The hospital site agent: dials out to the server, trains on local data, sends back only weights and counts."""
