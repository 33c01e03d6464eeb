"""Test scaffolding, kept apart from the algorithms: builders of tiny models and data.

`tiny` (tokenizers and tiny OPT/Llama-style LMs trained on text shipped with Python),
`fixtures` (the example models and data of `modelops fixtures` and `make demo`) and
`shift_task` (the letter-shift world of the Trans-LoRA benchmark) serve the tests, the
demo and the benchmarks. Nothing a Job runs imports this package (import-linter).
"""
