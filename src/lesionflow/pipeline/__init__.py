"""The machinery around the stages: config and schema, content keys, the stage registry,
artifact writing and errors. Never imports a stage's own logic."""
