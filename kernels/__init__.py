"""Triton kernels, each beside the torch reference it must match (shipped as `maxcli.kernels`)."""
