"""Benchmark suite for threadloader.

In:  a benchmark environment (interpreter, ``--mode thread|process``) and a
     set of workloads (``benchmarks.workloads``).
Out: ``results/<env-name>.json`` per environment (``benchmarks.run``), and one
     combined Markdown table plus one PNG plot for all environments
     (``benchmarks.collect``).

Modules, one idea each:
    workloads/   the datasets (one module per workload) and their registry.
    loaders.py   the loaders compared: threadloader, torch, the peers
                 (SPDL, Grain, torchdata), a bare thread pool, and a
                 serial loop; which of them can run here.
    labels.py    loader keys, display names, report order, where each runs.
    metrics.py   process-tree PSS and CPU sampling (a background thread).
    measure.py   one timed pass of one loader over one workload.
    system.py    interpreter and machine description (no hostname).
    report.py    medians, ratios against torch, the Markdown table and the
                 targets.
    plot.py      the PNG plot.
    run.py       the runner CLI (one environment).
    collect.py   the combiner CLI (all environments).
    ownership_probe.py
                 which calls slow down on 3.13t when another thread made
                 the object (a CLI of its own, docs/ownership.md);
                 ownership_pipeline.py runs its text-pipeline part;
                 thread_start.py starts their threads together.
"""
