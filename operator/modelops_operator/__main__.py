"""`python -m modelops_operator`: run the operator with settings from the environment."""

from modelops_operator.main import run

if __name__ == "__main__":
    run()
