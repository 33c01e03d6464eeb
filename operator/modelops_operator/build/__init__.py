"""Pure builders: resource data in, Kubernetes manifests (plain dicts) out."""
