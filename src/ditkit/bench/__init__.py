"""Benchmarks of DiT training and sampling: images/s, achieved TFLOP/s, MFU, peak memory, numerics.

Entry points: `ditkit bench train|sample|cpu-compare|check|peak` (its parser is `ditkit.cli.bench`)
and, under them, `bench_train`, `bench_sample`, `compare_steps`, `run_checks`, `matmul_peak_tflops`.
bench/gpu.py runs the GPU correctness checks and throughput table in one call.
"""
