"""Throughput, latency and memory benchmarks; `make bench` runs them (results in results/)."""
