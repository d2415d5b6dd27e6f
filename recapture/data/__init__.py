"""data stage: datasets and generated scenes.

* :mod:`recapture.data.procedural`: the scene model and ray caster shared by every generator, and
  the endless seeded procedural video dataset (disjoint train / eval splits, exact novel views).
* :mod:`recapture.data.example`: the offline demo's example clip (static camera, exact depth).
* :mod:`recapture.data.kubric`: Kubric-4D reader, GCD protocol, synthetic scenes in its layout.

Submodules are imported on use (nothing heavy is imported here).
"""
