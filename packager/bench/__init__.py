"""Benchmarks of a served model: `mlpack bench` and the pieces scripts reuse (shared STYLE.md 1, library first).

    load       a closed-loop load generator (run_load, HttpPost) and latency percentiles; pure Python
    sources    the argument resolved: a model, or an image with its layer sizes and model files
    subjects   servers under test (Subject) and the local one: `python -m mlpk.runtimes.server` as a process
    containers the ones under Docker: the image in a container, a Lambda image under the Lambda emulator
    charts     latency distribution, throughput by concurrency and bar charts as PNG (matplotlib, lazily)
    report     run(BenchRequest) -> BenchReport, and the files it writes (bench.json, charts, server.log)
"""
