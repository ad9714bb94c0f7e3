"""The work behind each CLI verb: `run(app, **options)` per module, returning an exit code or
None. The CLI imports these; they never import the CLI."""
