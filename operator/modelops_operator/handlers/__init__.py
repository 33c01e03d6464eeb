"""Thin kopf adapters: turn watch events into `Reconciler.reconcile` calls."""
