"""Model registries the operator records versions in (MLflow's, when configured)."""
