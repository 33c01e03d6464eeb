"""One module per method; the `*_job` modules adapt a kind's spec to its algorithm."""
