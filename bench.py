"""Throughput benchmark of galaxy classify; see engine/benchmark.py or `python bench.py --help`."""

from engine.benchmark import main

if __name__ == "__main__":
    main()
