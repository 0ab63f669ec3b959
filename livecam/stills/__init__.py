"""Still headshots (`livecam still`): the export run (`export`), the AI-generated disclosure and C2PA
signing of every file (`provenance`), and team batches, locally or on Ray (`batch`)."""
