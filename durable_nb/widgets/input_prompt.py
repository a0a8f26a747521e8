"""``InputPrompt``: answer a ``ctx.durable_input`` question from the notebook.

A run that reaches an unanswered ``ctx.durable_input(prompt, choices=...)``
stops in the WAITING state (``dnb.AwaitingInput``). When the notebook extension
is loaded, :mod:`durable_nb.notebook.inputs` shows this widget right then (the
journal layer calls the hook it registered); ``ReconcilePanel`` shows one per
waiting input too, so a question asked before a kernel restart can still be
answered after it.

The widget writes through ``store.answer(run_id, index, value)`` only: the
answer is journaled as the call's result (SUCCEEDED, origin RESOLVED), and the
next run of the action or cell replays up to it and goes on. It never resumes
the run itself: running is the person's next step, and the widget says so.

With ``choices`` there is one button per choice, and the answer is that choice
(the value itself, not its label). Without them there is a text box; the answer
is the text exactly as typed (a ``str``), so the action converts it if it needs
a number.

Stable hooks (for browser tests): the root has class ``dnb-input-prompt``; its
HTML is ``.dnb-input`` with ``data-call="RUN#INDEX"``, the question in
``.dnb-prompt`` and the state in ``.dnb-state`` (``WAITING``, then
``ANSWERED``); ``.dnb-message`` holds the last message (``.dnb-ok`` /
``.dnb-error``). Choice buttons are labelled ``str(choice)`` (``repr(choice)`` when two
choices share a ``str``: :func:`captions`); the free-text answer button is "Answer".
"""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from ..journal.records import CallRecord
from ..journal.store import Store
from ._close import close_children, close_tree
from ._html import esc, label, message, page
from ._sync import changed, unwatch, watch

ANSWER_TEXT = "Answer"
NO_QUESTION = "(no question on record: the run stopped before asking; run the action again so it asks)"
AFTER_ANSWER = "answered: run the action (or the cell) again to continue from here"


def captions(choices: tuple[Any, ...]) -> list[str]:
    """The choice buttons' labels: ``str(choice)``, but ``repr`` for choices whose ``str`` another choice shares.

    Why: choices may be ints and None, and ``[1, "1", None, "None"]`` drew two buttons "1" and two "None" that
    answer different values; a person could not tell which one journals what (the tooltip only shows on
    hover). An empty str is shown as ``''`` too (a blank button), and a label still shared (two long choices
    cut at the same place) is numbered.
    """
    plain = [label(c, 80) for c in choices]
    shared = {t for t in plain if plain.count(t) > 1}
    texts = [label(repr(c), 80) if t in shared or t == "" else t for c, t in zip(choices, plain, strict=True)]
    return [f"{i + 1}. {t}" if texts.count(t) > 1 else t for i, t in enumerate(texts)]


class InputPrompt(W.VBox):
    """One waiting ``durable_input``: its question, and buttons (choices) or a text box to answer it.

    Args:
        store: the store holding the run.
        record: the waiting input call (from ``store.waiting()``; carries ``prompt`` and ``choices``).

    ``answer(value)`` is what a click does; it returns True when the answer was
    journaled. Errors (the run was answered elsewhere, a value outside the
    choices) are shown in the widget, never raised into a click handler.
    """

    def __init__(self, store: Store, record: CallRecord) -> None:
        self.store = store
        self.record = record
        self.state = "WAITING"
        """``WAITING`` until answered here, then ``ANSWERED``."""
        self.answered: Any = None
        """The value journaled by this widget (None until then)."""
        self.answer_text: str | None = None
        """What the widget shows as the answer: ``repr`` of the value, or the stored preview."""
        self.info = W.HTML()
        self.message = W.HTML()
        self.choice_buttons: list[W.Button] = []
        self.text = W.Text(placeholder="type your answer", layout=W.Layout(width="320px"))
        self.answer_button = W.Button(description=ANSWER_TEXT, button_style="primary",
                                      tooltip="journal this text as the answer (origin RESOLVED)")
        if record.choices is not None:
            for choice, caption in zip(record.choices, captions(record.choices), strict=True):
                button = W.Button(description=caption, tooltip=label(f"answer {choice!r}"))
                button.on_click(lambda _, choice=choice: self.answer(choice))
                self.choice_buttons.append(button)
            controls: list[W.Widget] = list(self.choice_buttons)
        else:
            self.answer_button.on_click(lambda _: self.answer(self.text.value))
            controls = [self.text, self.answer_button]
        super().__init__([self.info, W.HBox(controls), self.message])
        self.add_class("dnb-input-prompt")
        self.draw()
        watch(self)

    def __repr__(self) -> str:
        # Stable text/plain in saved notebooks: no widget state, no timestamps.
        return f"InputPrompt({self.record.run_id!r}, {self.record.index}, {self.record.prompt!r})"

    def close(self) -> None:
        """Close the prompt and every widget it made, the text box and Answer button a choice prompt does not show
        included."""
        unwatch(self)
        close_children(self)
        for part in ("text", "answer_button"):
            widget = getattr(self, part, None)  # None on a prompt whose __init__ failed
            if widget is not None:
                close_tree(widget)
        super().close()

    def draw(self) -> None:
        r = self.record
        choices = "" if r.choices is None else " · choices: " + ", ".join(repr(c) for c in r.choices)
        answered = (f' <span class="dnb-outcome">{esc(self.answer_text)}</span>'
                    if self.state == "ANSWERED" else "")
        question = r.prompt if r.prompt is not None else NO_QUESTION
        self.info.value = page(
            f'<div class="dnb-input" data-call="{esc(r.run_id)}#{esc(r.index)}">'
            f'<span class="dnb-prompt"><b>{esc(question)}</b></span> '
            f'<span class="dnb-note">run {esc(r.run_id)} · call {esc(r.index)}{esc(choices)}</span> → '
            f'<span class="dnb-state dnb-status-{"SUCCEEDED" if answered else "PENDING"}">{esc(self.state)}</span>'
            f"{answered}</div>"
        )
        with self.hold_sync():
            for w in (*self.choice_buttons, self.text, self.answer_button):
                w.disabled = self.state != "WAITING" or r.prompt is None

    def answer(self, value: Any) -> bool:
        """Journal ``value`` as the answer (``store.answer``); show the outcome in the widget."""
        r = self.record
        if self.state != "WAITING":
            return self._say(f"already answered ({self.answer_text}); nothing written.", "error")
        try:
            self.store.answer(r.run_id, r.index, value)
        except Exception as exc:  # shown, not raised: a click handler's exception is only logged
            return self._say(f"could not answer {r.run_id} #{r.index}: {type(exc).__name__}: {exc}", "error")
        self.state, self.answered, self.answer_text = "ANSWERED", value, repr(value)
        self.draw()
        changed(self.store, source=self)
        return self._say(f"{r.run_id} #{r.index} {AFTER_ANSWER}.", "ok")

    def refresh(self) -> None:
        """Redraw after another widget wrote (the ``_sync`` protocol); an answer made elsewhere shows here."""
        if self.state != "WAITING":
            return
        try:
            now = self.store.call(self.record.run_id, self.record.index)
        except Exception as exc:  # shown, not raised: called from another widget's click handler
            self._say(f"could not read the journal: {type(exc).__name__}: {exc}", "error")
            return
        if now is not None and now.status.value != "PENDING":
            self.state, self.answer_text = "ANSWERED", now.result_preview
            self.draw()

    def _say(self, text: str, kind: str) -> bool:
        self.message.value = message(text, kind)
        return kind == "ok"
