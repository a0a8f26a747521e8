"""The notebook layer: ``%%durable`` cells and the magics.

- :mod:`.magics`: the IPython glue (``%%durable``, ``%durable_journal``, ...): parse, check, delegate.
- :mod:`.kernel`: a cell in the kernel: replay from the journal, or perform and restore the notebook.
- :mod:`.perform`: the cell as a durable call (:func:`~.perform.perform_cell`), shared by the kernel
  and Flink workers (:class:`~.perform.CellRun`, :class:`~.perform.CellAction`); no IPython import.
- :mod:`.outcome`: :class:`~.outcome.CellOutcome`, what a cell journals, typed.
- :mod:`.cell`: what a cell reads and binds (syntax analysis, input digests).
- :mod:`.outputs`: what a cell shows (recording outputs in order, showing them again).
- :mod:`.runids`: cell call ids and run ids.
- :mod:`.timetravel`: ``%%durable --dry``, ``%durable_fork``, ``%durable_prune``; :mod:`.inputs`: a
  ``durable_input`` waiting for an answer, shown in the notebook.

IPython is imported only where the magics run (``magics``, ``kernel``, ``timetravel``):
``perform``, ``outcome``, ``outputs``, ``cell`` and ``runids`` never import it, because Flink
workers load them to run a cell (``tests/test_layout.py`` checks this). This ``__init__`` imports
nothing, so ``import durable_nb`` stays cheap.
"""
