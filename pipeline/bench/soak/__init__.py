"""The soak (``statbus bench --only soak``, and ``tests/system/test_soak.py`` in a short form).

Trainer processes record at a steady, realistic rate while the collector, a plugin
worker and a trainer are killed over and over; afterwards every output is read
back and compared with what each trainer recorded.  :mod:`.trainer` is the trainer
process, :mod:`.fleet` starts and kills the processes, :mod:`.watch` samples
memory, descriptors and the journal and checks ``statbus status`` as it goes,
:mod:`.outputs` reads the outputs back; the figure itself is
:mod:`statbus.pipeline.bench.figures.soak`.
"""
