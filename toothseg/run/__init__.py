"""The run folder layer: typed readers and writers of every file a run holds (docs/architecture.md)."""
