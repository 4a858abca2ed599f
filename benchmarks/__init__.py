"""The dspex_actors latency suite: ``python -m benchmarks`` (``--help`` for its options).

Every figure is measured beside raw baselines (a dict lookup, a bare Pykka ask, a
bare grpcio echo) and beside what users would pick instead (Redis through
redis-py, etcd's gRPC API) in the same run, each op in blocks interleaved
round-robin, and reported as a ratio to them: on a small noisy machine an absolute
time from one run is not a fact, a ratio in one run is closer. redis-py's ``GET``
is also sampled in a fresh process of its own (``alone``), the cross-check that the
Redis figure every ratio to Redis divides by is what a redis-py user measures.

Modules: one per suite (``local``, ``memory``, ``bridge``, ``throughput``,
``migration``, ``scale``, ``streaming``, ``watchers``); ``servers`` starts every
server alike and explains how the suite pins to cores and why; ``affinity`` is the
launcher that does it; ``peers`` holds the Redis and etcd clients; ``load`` is a
throughput client and ``watchers`` also a load helper; ``alone`` is redis-py alone
in a process of its own; ``timing`` samples (and says why in blocks); ``results``,
``report``, ``targets`` (with ``targets.toml``, the one list of targets), ``trust``
(the bounds a figure must hold to be judged at all) and ``plot`` turn samples into
tables, Markdown, JSON, a verdict and a picture.
"""
