"""`python -m modelops_devcluster up|down|kubeconfig`, the same as `modelops cluster`."""

from modelops_devcluster.cli import main

main()
