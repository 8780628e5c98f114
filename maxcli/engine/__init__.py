"""Engine: scheduler (continuous batching, chunked prefill, preemption) and sampler."""

from maxcli.engine.sampler import Sampler, SamplerOutput, prompt_logprobs
from maxcli.engine.scheduler import Scheduler, SchedulerOutput

__all__ = ["Sampler", "SamplerOutput", "Scheduler", "SchedulerOutput", "prompt_logprobs"]
