"""Built-in architectures: one folder each, exporting ARCHITECTURES like a user's custom folder.

maxcli.plugins lists these folders (and installed plugins) for PIPELINE_REGISTRY, so adding an
architecture is adding its folder; no other module names one.
"""
