"""``statbus learn``: ML-Agents' own ``mlagents-learn``, with every stats writer out of process.

mlagents is imported only by the modules of this package, and only when
:func:`statbus.pipeline.learn` runs: ``import statbus.pipeline`` stays cheap.
"""
