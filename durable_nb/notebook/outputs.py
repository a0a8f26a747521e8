"""What a ``%%durable`` cell shows: recording its outputs in order, and showing them again.

A durable cell's result includes everything it printed and displayed, in the
order it appeared. :class:`OutputRecorder` records stdout, stderr and rich
display outputs as one ordered list while the user still sees them live (in the
kernel), or only records stdout and stderr (in a Flink worker, where nobody
watches); :func:`replay_outputs` shows a recorded list again; :class:`RecordedResult`
stands in for a result that could not be pickled.

Nothing here imports IPython: :meth:`OutputRecorder.recording` works on the
shell it is given (its display publisher).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Any

WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"

#: One output: ``("stdout" | "stderr", text)``, ``("display", data, metadata[, display_id])``, or
#: ``("update", data, metadata, display_id)``: the cell redrew a display id it did not show itself.
Output = tuple[Any, ...]


class _Tee:
    """A stream that writes through to the real one and records what passes, in order."""

    def __init__(self, recorder: OutputRecorder, name: str, stream: Any) -> None:
        self._recorder = recorder
        self._name = name
        self._stream = stream

    def write(self, text: str) -> int:
        if text:
            self._recorder.add_stream(self._name, text)
        return self._stream.write(text)  # type: ignore[no-any-return]

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._stream, attr)


class _Sink:
    """A text stream that only records what is written (see :meth:`OutputRecorder.streams`)."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, recorder: OutputRecorder, name: str) -> None:
        self._recorder = recorder
        self._name = name

    def write(self, text: str) -> int:
        if text:
            self._recorder.add_stream(self._name, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


@dataclass
class OutputRecorder:
    """Records stdout, stderr and rich display outputs as ONE ordered list while teeing them.

    ``IPython.utils.capture.capture_output`` hides outputs while capturing and
    loses their relative order; a durable cell must show its output live and
    replay it in the order it appeared.
    """

    shell: Any
    _items: list[Output] = field(default_factory=list)
    _publishing: bool = False
    _clear_pending: bool = False
    _tail: list[str] = field(default_factory=list)
    """Pieces of the last stream output not yet joined into it: a loop of prints stays linear, not quadratic."""

    @property
    def outputs(self) -> list[Output]:
        """The outputs so far, in order (consecutive writes to one stream joined)."""
        self._join()
        return self._items

    @outputs.setter
    def outputs(self, items: list[Output]) -> None:
        self._tail = []
        self._items = items

    def _join(self) -> None:
        if self._tail:
            self._items[-1] = (self._items[-1][0], "".join(self._tail))
            self._tail = []

    def add_stream(self, name: str, text: str) -> None:
        if self._publishing:
            return  # a terminal shell prints display data to stdout: it is already recorded as display
        if self._clear_pending:
            self.clear()
        last = self._items[-1] if self._items else None
        if last is not None and last[0] == name:
            if not self._tail:
                self._tail.append(last[1])
            self._tail.append(text)
        else:
            self._join()
            self._items.append((name, text))

    def add_display(self, data: Mapping[str, Any], metadata: Mapping[str, Any] | None,
                    transient: Mapping[str, Any] | None, update: bool) -> None:
        display_id = (transient or {}).get("display_id")
        item: Output = ("display", dict(data), dict(metadata or {}), display_id)
        if update and display_id is not None:
            # An update redraws an earlier output in place: keep the final state there.
            shown = False
            for i, old in enumerate(self.outputs):
                if old[0] == "display" and len(old) > 3 and old[3] == display_id:
                    self.outputs[i] = item
                    shown = True
            if not shown:  # an output of another cell (a status line above): its replay redraws it too
                self.outputs.append(("update", *item[1:]))
            return
        if self._clear_pending:
            self.clear()
        self.outputs.append(item)

    def clear(self, wait: bool = False) -> None:
        """``clear_output(wait=True)`` clears when the next output arrives, as the frontend does.

        Why: a cell ending in ``clear_output(wait=True)`` keeps showing what it showed
        before (nothing new arrived to replace it), so its replay shows that too.
        """
        self._clear_pending = wait
        if not wait:
            self.outputs = []

    @contextmanager
    def streams(self) -> Iterator[OutputRecorder]:
        """Record stdout and stderr only, without showing them: for a cell running where nobody watches.

        A Flink worker has no display publisher; ``IPython.display.display`` there
        prints its objects' ``repr`` to stdout, so rich outputs arrive as that text.
        Output written to file descriptors 1/2 directly (C code, subprocesses) is not seen.
        """
        out, err = _Sink(self, "stdout"), _Sink(self, "stderr")
        with redirect_stdout(out), redirect_stderr(err):  # type: ignore[type-var]
            yield self

    @contextmanager
    def recording(self) -> Iterator[OutputRecorder]:
        pub = self.shell.display_pub
        saved_publish = vars(pub).get("publish")
        saved_clear = vars(pub).get("clear_output")
        orig_publish = pub.publish
        orig_clear = pub.clear_output

        def publish(data: Any, metadata: Any = None, *args: Any, **kwargs: Any) -> Any:
            self.add_display(data, metadata, kwargs.get("transient"), bool(kwargs.get("update")))
            self._publishing = True
            try:
                return orig_publish(data, metadata, *args, **kwargs)
            finally:
                self._publishing = False

        def clear_output(wait: bool = False, *args: Any, **kwargs: Any) -> Any:
            self.clear(bool(wait))
            return orig_clear(wait, *args, **kwargs)

        pub.publish = publish
        pub.clear_output = clear_output
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(self, "stdout", out), _Tee(self, "stderr", err)
        try:
            yield self
            _flush_inline_figures()
        finally:
            sys.stdout, sys.stderr = out, err
            for attr, saved in (("publish", saved_publish), ("clear_output", saved_clear)):
                if saved is None:
                    vars(pub).pop(attr, None)
                else:
                    setattr(pub, attr, saved)
            # a display id is kept only when there is one (the journal stays as small as before)
            self.outputs = [o if o[0] == "stdout" or o[0] == "stderr" else self._final_view(o) for o in self.outputs]

    def _final_view(self, item: Output) -> Output:
        """A widget view's text as the widget ended, not as it was first shown.

        Why: a replay cannot show the widget (its model died with the kernel), only this
        text; a progress bar displayed at 0% and driven to 100% must replay as 100%.
        """
        item = item if item[0] == "update" or item[3:4] != (None,) else item[:3]
        data = item[1]
        view = data.get(WIDGET_VIEW_MIME)
        widget = _live_widget(view.get("model_id") if isinstance(view, Mapping) else None)
        if widget is None:
            return item
        try:  # the widget's own bundle, not the shell's formatter: that one prints a failing repr's traceback
            bundle = getattr(widget, "_repr_mimebundle_", None)
            text = bundle()["text/plain"] if callable(bundle) else repr(widget)
        except Exception:  # a widget whose repr fails keeps the text it was shown with
            return item
        return (item[0], {**data, "text/plain": text}, *item[2:]) if isinstance(text, str) else item


def _live_widget(model_id: Any) -> Any:
    """The ipywidgets widget with this model id in this kernel, if ipywidgets is in use and it is alive."""
    module = sys.modules.get("ipywidgets.widgets.widget")
    instances = getattr(module, "_instances", None)
    if model_id is None or not isinstance(instances, Mapping):
        return None
    return instances.get(model_id)


def _flush_inline_figures() -> None:
    """matplotlib-inline shows figures after the cell ends; show them inside the recording instead."""
    inline = sys.modules.get("matplotlib_inline.backend_inline")
    mpl = sys.modules.get("matplotlib")
    if inline is None or mpl is None:
        return
    try:
        if "inline" in str(mpl.get_backend()):
            inline.flush_figures()
    except Exception:  # a plotting failure must not fail the durable cell
        return


def replay_outputs(shell: Any, outputs: list[Output]) -> None:
    """Show recorded outputs again, in order, with their MIME types and display ids.

    Widget views are dropped: the widget model they point at lived in the kernel
    that recorded them, and a view of a missing model renders "Loading widget..."
    forever; their ``text/plain`` fallback is shown instead.

    A display keeps its display id, so that a later cell's ``update_display`` (or a
    restored ``DisplayHandle``'s ``update``) redraws the replayed output as it redrew
    the first one; an update of another cell's display id is sent again as an update.
    """
    for stream in (sys.stdout, sys.stderr):  # what was printed before (the replay notice) comes first
        stream.flush()
    for item in outputs:
        kind = item[0]
        if kind == "stdout" or kind == "stderr":
            stream = sys.stdout if kind == "stdout" else sys.stderr
            stream.write(item[1])
            stream.flush()  # keep stdout/stderr interleaving as recorded
        elif kind == "display" or kind == "update":
            data = {k: v for k, v in item[1].items() if k != WIDGET_VIEW_MIME}
            display_id = item[3] if len(item) > 3 else None
            if not data:
                continue
            if display_id is None:
                shell.display_pub.publish(data=data, metadata=item[2])
            else:
                shell.display_pub.publish(data=data, metadata=item[2], transient={"display_id": display_id},
                                          update=kind == "update")


class RecordedResult:
    """Stands in for a cell result that could not be journaled: shows its recorded output."""

    def __init__(self, data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
        self._data = {k: v for k, v in data.items() if k != WIDGET_VIEW_MIME}
        self._metadata = dict(metadata or {})

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(self._data), dict(self._metadata)

    def __repr__(self) -> str:
        return str(self._data.get("text/plain", "<recorded result>"))
