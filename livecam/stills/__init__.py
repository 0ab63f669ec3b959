"""Still headshots (`livecam still`): the export run (`export`) over the subject photo and its checks
(`subject`), the rendered and gated candidates (`render`), the run folder with its images, contact sheet and
report (`files`), the AI-generated disclosure and C2PA signing of every file (`provenance`), the loaded models
(`workbench`), and team batches, locally or on Ray (`batch`)."""
