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

#: One output: ``("stdout" | "stderr", text)`` or ``("display", data, metadata)``.
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
    outputs: list[Output] = field(default_factory=list)
    _publishing: bool = False

    def add_stream(self, name: str, text: str) -> None:
        if self._publishing:
            return  # a terminal shell prints display data to stdout: it is already recorded as display
        last = self.outputs[-1] if self.outputs else None
        if last is not None and last[0] == name:
            self.outputs[-1] = (name, last[1] + text)
        else:
            self.outputs.append((name, text))

    def add_display(self, data: Mapping[str, Any], metadata: Mapping[str, Any] | None,
                    transient: Mapping[str, Any] | None, update: bool) -> None:
        display_id = (transient or {}).get("display_id")
        item: Output = ("display", dict(data), dict(metadata or {}), display_id)
        if update and display_id is not None:
            # An update redraws an earlier output in place: keep the final state there.
            for i, old in enumerate(self.outputs):
                if old[0] == "display" and old[3] == display_id:
                    self.outputs[i] = item
            return
        self.outputs.append(item)

    def clear(self) -> None:
        self.outputs.clear()

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

        def clear_output(*args: Any, **kwargs: Any) -> Any:
            self.clear()
            return orig_clear(*args, **kwargs)

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
            # outputs hold their final display ids only while recording
            self.outputs = [o if o[0] != "display" else o[:3] for o in self.outputs]


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
    """Show recorded outputs again, in order, with their MIME types.

    Widget views are dropped: the widget model they point at lived in the kernel
    that recorded them, and a view of a missing model renders "Loading widget..."
    forever; their ``text/plain`` fallback is shown instead.
    """
    for item in outputs:
        kind = item[0]
        if kind == "stdout" or kind == "stderr":
            stream = sys.stdout if kind == "stdout" else sys.stderr
            stream.write(item[1])
            stream.flush()  # keep stdout/stderr interleaving as recorded
        elif kind == "display":
            data = {k: v for k, v in item[1].items() if k != WIDGET_VIEW_MIME}
            if data:
                shell.display_pub.publish(data=data, metadata=item[2])


class RecordedResult:
    """Stands in for a cell result that could not be journaled: shows its recorded output."""

    def __init__(self, data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
        self._data = {k: v for k, v in data.items() if k != WIDGET_VIEW_MIME}
        self._metadata = dict(metadata or {})

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(self._data), dict(self._metadata)

    def __repr__(self) -> str:
        return str(self._data.get("text/plain", "<recorded result>"))
