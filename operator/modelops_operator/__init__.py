"""The modelops operator: kopf handlers, a pure reconciler, builders and the API adapter.

Data flows one way: `handlers/` receive events, `k8s/observe` reads the world into
plain data, `reconcile.plan()` decides (pure), `k8s/apply` carries out the actions.
This package never imports torch or the jobs.
"""
