"""ModelAdaptation runs: dispatch on `spec.strategy` to the algorithm that trains."""

from typing import Any

from modelops_jobs.context import AlgorithmResult, RunContext


def run(spec: Any, ctx: RunContext) -> AlgorithmResult:
    if spec.strategy == "cpt":
        from modelops_jobs.algorithms import cpt_job

        return cpt_job.run(spec, ctx)
    if spec.strategy == "s3t":
        from modelops_jobs.algorithms import s3t_job

        return s3t_job.run(spec, ctx)
    from modelops_jobs.algorithms import lora_finetune

    return lora_finetune.run(spec, ctx)
