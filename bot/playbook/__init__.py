"""Playbooks: YAML runbooks that match alerts and run diagnostics and guarded remediations."""
