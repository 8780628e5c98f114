"""Built-in architectures: one folder each, exporting ARCHITECTURES like a user's custom folder.

PIPELINE_REGISTRY finds them through the `maxcli.architectures` entry points in pyproject.toml (the same
way it finds a plugin package's), so no module below this one names an architecture.
"""
