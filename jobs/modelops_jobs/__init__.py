"""modelops_jobs: what runs inside a modelops Job pod (and in `modelops run`).

`runner` owns the contract with the operator (spec in, termination message and exit
code out); each algorithm lives in `algorithms/` and is looked up lazily through
`registry`. Nothing here imports kopf, kubernetes or the operator.
"""
