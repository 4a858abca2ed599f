"""The dspex_actors latency suite: ``python -m benchmarks``.

Every figure is measured beside raw baselines (a dict lookup, a bare Pykka ask, a
bare grpcio echo) in the same run and reported as a ratio to them: on a small noisy
machine an absolute time from one run is not a fact, a ratio in one run is closer.
"""
