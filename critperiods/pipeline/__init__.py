"""The workflow's machinery: the plan of a config, the layout of results, checkpoint
files, training jobs, devices, code and data fingerprints, provenance, and one adapter per
stage."""
