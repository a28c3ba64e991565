"""``python -m benchmarks``: run the benchmarks and print their figures."""

from benchmarks import hook_cost

if __name__ == "__main__":
    hook_cost.main()
