"""The journal and its replay rules: the layer every other one builds on (imports only ``errors``).

- :mod:`.replay`: THE replay rules (:class:`~.replay.Journal`, :func:`~.replay.decide`, :class:`~.replay.Decision`).
- :mod:`.context`: :class:`~.context.RunnerContext`, ``open_run``, ``current_context``: a run opened on a store.
- :mod:`.records`: the record types (``CallRecord``, ``RunRecord``, ``Outcome``, statuses).
- :mod:`.store`: the :class:`~.store.Store` protocol every backend implements.
- :mod:`.lease`: run leases (owner ids, liveness, take-over, release).
- :mod:`.codec`, :mod:`.digest`, :mod:`.callid`: payloads and previews, argument digests, call ids.
- :mod:`.faults`: fault injection for tutorials and tests; :mod:`.frames`: pandas views.
- :mod:`.history`, :mod:`.timetravel`: fork, retention, human input; dry runs.

This ``__init__`` imports nothing, so importing one module of the layer stays cheap.
"""
