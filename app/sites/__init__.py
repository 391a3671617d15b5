"""Hospital sites: registry, enrollment, signed requests and the /api/site/ pull protocol."""
