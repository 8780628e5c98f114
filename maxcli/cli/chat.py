"""Chat with a model at the terminal: each line is a message, the answer streams back (/help lists commands)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Optional, TextIO

import typer

from maxcli.cli.options import pipeline_options
from maxcli.config import PipelineConfig

PROMPT = ">>> "
COMMANDS = {
    "/help": "show this list",
    "/clear": "forget the conversation (the system prompt stays)",
    "/exit": "leave (also /bye, or Ctrl-D)",
}
EXIT_COMMANDS = ("/exit", "/bye")


@pipeline_options
def chat(
    config: PipelineConfig,
    system: Optional[str] = typer.Option(None, "--system", metavar="TEXT", help="System prompt for the conversation."),
) -> None:
    from maxcli.engine.llm import LLM

    # One conversation runs one request at a time: a batch of one keeps the KV cache to one sequence.
    config = config.model_copy(update={"max_batch_size": 1})
    llm = LLM.from_config(config)
    llm.require_chat_template()  # fail before the first prompt is shown, not after the first message
    with llm:  # closing stops tensor-parallel ranks in order, before interpreter teardown
        ChatSession(llm, system, interactive=sys.stdin.isatty()).run()


class ChatSession:
    """The read-answer loop over one growing conversation.

    Invariants: between answers, `messages` is the optional system message followed by user/assistant
    pairs; stdout carries only the answers, each followed by a newline (notes, help, errors and, when
    stdout is not a terminal, the prompt go to stderr); the prompt is shown only when stdin is a terminal.
    """

    def __init__(self, llm: Any, system: str | None, interactive: bool, stdin: TextIO | None = None) -> None:
        self.llm = llm
        self.params = llm.default_sampling_params()
        self.system = [{"role": "system", "content": system}] if system else []
        self.messages: list[dict[str, str]] = list(self.system)
        self.interactive = interactive
        self.stdin = stdin or sys.stdin
        self._at_prompt = False  # True only inside input(): where Ctrl-C may raise
        self._cancel: threading.Event | None = None  # set only while an answer streams
        if interactive:
            try:
                import readline  # noqa: F401 - importing it gives input() line editing and history
            except ImportError:  # pragma: no cover - platforms without GNU readline / libedit
                pass

    def run(self) -> None:
        """Read lines until EOF or an exit command. In a terminal, SIGINT goes to `_on_sigint` meanwhile."""
        if not self.interactive:
            return self._loop()
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            self._loop()
        finally:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)

    def _on_sigint(self, _signum: int, _frame: Any) -> None:
        """Ctrl-C in a terminal: at the prompt it raises KeyboardInterrupt (inside `_read`'s try, so the
        line is dropped); while an answer streams it stops the answer (`cancel`, checked between engine
        steps, so an interrupt never lands inside one); at any other moment it is ignored, so no Ctrl-C
        ends the session."""
        if self._at_prompt:
            raise KeyboardInterrupt
        if self._cancel is not None:
            self._cancel.set()

    def _loop(self) -> None:
        while True:
            line = self._read()
            if line is None:
                return
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if not self._command(text):
                    return
                continue
            self.answer(text)

    def answer(self, text: str) -> str:
        """Stream the assistant's answer to `text` and keep both turns in the history.

        In a terminal, Ctrl-C stops the answer (not the program): the text so far is kept as the turn.
        A turn the model rejects (e.g. the conversation outgrew max_length) is an error line in a terminal,
        and the history is left as it was; in a pipe it ends the run like any other bad input.
        """
        from maxcli.interfaces import InputError

        self.messages.append({"role": "user", "content": text})
        out = sys.stdout

        def on_text(delta: str) -> None:
            out.write(delta)
            out.flush()

        cancel = threading.Event()
        self._cancel = cancel  # from here to the finally, Ctrl-C sets it and never raises
        try:
            result = self.llm.chat(self.messages, self.params, on_text=on_text, cancel=cancel)
        except InputError as exc:
            self.messages.pop()
            if not self.interactive:
                raise
            _note(f"error: {exc} (/clear starts a new conversation)")
            return ""
        finally:
            self._cancel = None
        if result.finish_reason == "abort":
            out.write("\n")
            out.flush()
            _note("(stopped)")
        else:
            out.write("\n\n" if self.interactive else "\n")
            out.flush()
        if result.text:
            self.messages.append({"role": "assistant", "content": result.text})
        else:
            self.messages.pop()  # stopped before any text: the exchange did not happen
        return result.text

    def _read(self) -> str | None:
        """The next input line, or None at EOF. Ctrl-C at the prompt discards the line, not the program."""
        if not self.interactive:
            line = self.stdin.readline()
            return line if line else None
        while True:
            try:
                self._at_prompt = True
                return input(self._prompt())
            except EOFError:
                sys.stdout.write("\n")
                return None
            except KeyboardInterrupt:
                sys.stdout.write("\n")
                _note("Use Ctrl + d or /bye to exit.")
            finally:
                self._at_prompt = False

    @staticmethod
    def _prompt() -> str:
        """The prompt for input(): itself on a terminal; else written to stderr, out of the answers."""
        if sys.stdout.isatty():
            return PROMPT
        sys.stderr.write(PROMPT)
        sys.stderr.flush()
        return ""

    def _command(self, text: str) -> bool:
        """Run a /command; False when the session should end."""
        name = text.split()[0].lower()
        if name in EXIT_COMMANDS:
            return False
        if name == "/clear":
            self.messages = list(self.system)
            _note("Cleared the conversation.")
        elif name in ("/help", "/?"):
            _note("\n".join(f"  {cmd:<8} {what}" for cmd, what in COMMANDS.items()))
        else:
            _note(f"Unknown command {name!r}; /help lists the commands.")
        return True


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
