"""Tests of the KV cache manager, scheduler and sampler."""
