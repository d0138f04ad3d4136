"""Background work: jobs and their lanes, the inbox processor and job runner,
per-key locks, load, metrics and logs."""
