"""A reviewer's tools: each artifact's provenance, verify, reproduce, gc and a run exported as one
bundle, behind the `lesionflow` command. Never called by the pipeline's jobs."""
