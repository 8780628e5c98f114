"""`maxcli chat` on the real GGUF models: a terminal conversation driven through a pseudo-terminal (history,
Ctrl-C while answering and at the prompt, /clear, /exit), piped stdin, one-line errors, and LLM.chat's
cancel freeing the request's KV pages."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pexpect
import pytest

from cli_errors import assert_one_line_error
from maxcli.engine.llm import LLM
from maxcli.interfaces import InputError, SamplingParams

from tiny_checkpoints import write_tiny_llama

PROMPT = ">>> "
NAME_TURN = "My name is Ada. Reply with just OK."
ASK_NAME = "What is my name?"


def chat_cmd(model: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "maxcli", "chat", "--model", str(model), "--temperature", "0", *flags]


def test_terminal_conversation(qwen_gguf: Path) -> None:
    argv = chat_cmd(qwen_gguf, "--max-new-tokens", "1500")
    child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", timeout=120, dimensions=(40, 200))
    try:
        child.expect_exact(PROMPT)
        child.sendline(NAME_TURN)
        child.expect_exact(PROMPT)
        child.sendline(ASK_NAME)  # answerable only from the first turn
        child.expect_exact(PROMPT)
        assert "Ada" in child.before

        # Ctrl-C mid-answer stops the answer; the program asks for the next message.
        child.sendline("Count from 1 to 500, one number per line.")
        child.expect(r"\b5\b")
        child.sendintr()
        child.expect_exact("(stopped)")
        child.expect_exact(PROMPT)
        assert "499" not in child.before

        # Ctrl-C at the prompt discards the line and shows the prompt again.
        child.send("half a line")
        child.expect_exact("half a line")  # echoed: input() is reading, so the interrupt reaches it
        child.sendintr()
        child.expect_exact("Use Ctrl + d or /bye to exit.")
        child.expect_exact(PROMPT)

        child.sendline("/clear")
        child.expect_exact("Cleared the conversation.")
        child.expect_exact(PROMPT)
        child.sendline(ASK_NAME)  # the first turn is forgotten
        child.expect_exact(PROMPT)
        assert "Ada" not in child.before

        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0 and child.signalstatus is None


def test_piped_stdin(qwen_gguf: Path) -> None:
    lines = f"{NAME_TURN}\n\n/help\n{ASK_NAME}\n"
    r = subprocess.run(chat_cmd(qwen_gguf, "--max-new-tokens", "20"), input=lines, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    answers = r.stdout.splitlines()
    assert len(answers) == 2 and "Ada" in answers[1], r.stdout  # no prompt strings, one answer per message
    assert PROMPT not in r.stdout and "/clear" in r.stderr  # /help still works, on stderr


def test_system_prompt_is_kept_after_clear(smollm2_gguf: Path) -> None:
    system = "Whatever the user says, reply with exactly the word BANANA."
    lines = "Hi\n/clear\nHello there\n/bye\nnever read\n"
    r = subprocess.run(chat_cmd(smollm2_gguf, "--max-new-tokens", "8", "--system", system),
                       input=lines, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2, r.stdout  # /bye ends the run before the last line


@pytest.mark.parametrize("flags", [["--model", "/no/such/model.gguf"], ["--no-such-flag"], ["--temperature", "-1"]])
def test_bad_input_is_one_line(smollm2_gguf: Path, flags: list[str]) -> None:
    argv = [sys.executable, "-m", "maxcli", "chat", "--model", str(smollm2_gguf), *flags]
    r = subprocess.run(argv, input="hi\n", capture_output=True, text=True, timeout=120)
    assert_one_line_error(r)
    assert r.stdout == ""


@pytest.fixture(scope="module")
def no_template_model(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    folder = write_tiny_llama(tmp_path_factory.mktemp("no-template"), smollm2_gguf, max_positions=256)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "chat_template"}))
    return folder


def test_model_without_chat_template(no_template_model: Path) -> None:
    llm = LLM(model=str(no_template_model), max_length=256, max_batch_size=1)
    with pytest.raises(InputError, match="no chat template"):
        llm.chat([{"role": "user", "content": "hi"}])
    r = subprocess.run([sys.executable, "-m", "maxcli", "chat", "--model", str(no_template_model)],
                       input="hi\n", capture_output=True, text=True, timeout=120)
    assert_one_line_error(r, "no chat template")


def test_llm_chat_cancel_frees_pages(smollm2_gguf: Path) -> None:
    llm = LLM(model=str(smollm2_gguf), max_length=512, max_batch_size=1)
    kv = llm.engine.scheduler.kv
    messages = [{"role": "user", "content": "Count from 1 to 100."}]
    params = SamplingParams(temperature=0.0, max_new_tokens=24, ignore_eos=True)
    cancel = threading.Event()
    deltas: list[str] = []

    def on_text(delta: str) -> None:
        deltas.append(delta)
        cancel.set()

    out = llm.chat(messages, params, on_text=on_text, cancel=cancel)
    assert out.finish_reason == "abort"
    assert out.text == "".join(deltas) and len(deltas) == 1 and 0 < len(out.token_ids) < 24
    assert not llm.engine.has_unfinished
    assert kv.num_used_blocks == 0 and kv.num_free_blocks + kv.num_cached_blocks == kv.total_num_pages

    full = llm.chat(messages, params)  # the engine serves the next turn; the aborted one was its prefix
    assert full.finish_reason == "length" and full.text.startswith(out.text)
    assert kv.num_used_blocks == 0
