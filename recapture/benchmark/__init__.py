"""``recapture benchmark``'s orchestration: sweeps over Kubric-4D scenes, sharding, resumable results.

* :mod:`~recapture.benchmark.sweep`: :class:`BenchmarkSettings` (the ``kubric:`` config section),
  :func:`run_sweep` over a :class:`SceneRunner` (the Lightning one is
  :class:`recapture.training.scene_runner.LightningSceneRunner`), per-scene JSON resume points.
* :mod:`~recapture.benchmark.scenes`: which scenes and where they come from (a dataset root or generated).
* :mod:`~recapture.benchmark.launch`: ranks from ``torchrun``/SLURM, sharding, waiting for ranks.
* :mod:`~recapture.benchmark.results`: scoring a scene against its ground truth and the tables.

Plain torch: reading and writing the datasets is :mod:`recapture.data`; the metrics are
:mod:`recapture.metrics`; nothing here imports Lightning.
"""
