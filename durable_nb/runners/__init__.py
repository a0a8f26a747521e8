"""Runners: where actions run. They pick run ids and open runs; the journal layer decides everything else.

- :mod:`.local`: :class:`~.local.LocalRunner` (in this process) and the action helpers the others reuse.
- :mod:`.mapping`: how ``map`` turns records into keys and run ids (the same on every runner).
- :mod:`.rows`: :class:`~.rows.MapRow`, one record's outcome, and the failed-record rule both runners share.
- :mod:`.progress`: ``map(..., progress=True)``'s bar.
- :mod:`.flink_job`: ``FlinkRunner`` (the job); :mod:`.flink_env`: the Flink environment set-up;
  :mod:`.compat`: every private PyFlink/cloudpickle use; :mod:`.flink_cluster`: ``StandaloneCluster``.

This ``__init__`` imports nothing: ``import durable_nb`` must not pull in PyFlink.
"""
