"""`python -m trainer`: the same as `clipforge train`, for cluster jobs."""
import sys

from trainer.main import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
