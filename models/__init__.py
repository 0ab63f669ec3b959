"""Model files: the registry of every model livecam uses, and resolving a name to a local file.

Resolution order for each model: the path set in config, then the model directory (`models.dir`, else
`LIVECAM_MODEL_DIR`, else the user cache directory) under the registry file name, then a download from
the official URL checked against a pinned sha256.
"""
