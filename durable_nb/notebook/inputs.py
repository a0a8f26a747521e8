"""Show a ``durable_input`` question in the notebook the moment a run stops for it.

The journal layer must not import the notebook layer, so it offers a hook
(:func:`durable_nb.journal.context.set_input_hook`): when a run has just closed
WAITING at an unanswered ``ctx.durable_input``, the hook is told the store and
the :class:`~durable_nb.AwaitingInput`. ``%load_ext durable_nb`` registers
:func:`show_input` there, which displays an
:class:`~durable_nb.widgets.input_prompt.InputPrompt` (the prompt, one button per
choice or a text box) in the output of the cell that stopped. The answer is
journaled with ``store.answer``; running the action or cell again goes on from
it. After a kernel restart the question is still in the journal:
``ReconcilePanel`` lists it with the same control.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..journal import context as _context

if TYPE_CHECKING:
    from ..errors import AwaitingInput
    from ..journal.store import Store

_previous: list[Any] = []
"""Hooks that were registered before ours, restored by :func:`unregister` (a stack: load twice, unload twice)."""


def show_input(store: Store, waiting: AwaitingInput) -> None:
    """Display the answer widget for the input ``waiting`` names (nothing if it was answered meanwhile)."""
    from IPython.display import display

    from ..widgets.input_prompt import InputPrompt

    for record in store.waiting(waiting.run_id):
        if record.index == waiting.index:
            display(InputPrompt(store, record))
            return


def register() -> None:
    """Make :func:`show_input` the input hook (``%load_ext durable_nb``)."""
    previous = _context.set_input_hook(show_input)
    _previous.append(previous if previous is not show_input else None)


def unregister() -> None:
    """Put back the hook that was there before :func:`register` (``%unload_ext durable_nb``)."""
    _context.set_input_hook(_previous.pop() if _previous else None)
