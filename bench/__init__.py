"""Benchmarks of celery-durable: plain scripts, run one by one (see README.md)."""
