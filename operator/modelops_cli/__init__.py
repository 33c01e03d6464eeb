"""The `modelops` command: run the operator, run a spec locally, generate CRDs, manage
the local control plane. Heavy imports (kopf, torch) happen only in the subcommand that
needs them."""
