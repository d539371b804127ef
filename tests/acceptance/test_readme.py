"""Every example of README.md, read from README.md itself, so that the two cannot drift.

- every `fizz ...` command of the ```sh blocks (of the set-up commands, the `fizz` steps
  that follow the install), in the order of the README, each exiting 0;
- every `$ fizz ...` transcript of a plain ``` block, its output compared line for line;
- every `curl ...` command in backticks that holds no placeholder (`...`, `<id>`), as
  written, against a real `fizz serve` (on a free port in place of 8000, the machine being
  shared), each answering JSON that is not an error (without curl installed, the same
  request is made from Python, with curl's defaults).

They run in bash from the repository's root against this test's database. `fizz work` and
`fizz serve` run until stopped: each is started, seen ready, and stopped with Ctrl-C
(SIGINT), which ends it with exit status 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
COMMENT = re.compile(r"\s{2,}#.*$")


def sh_commands() -> list[str]:
    """The fizz commands of the sh blocks, in order, comments dropped."""
    commands = []
    for match in BLOCK.finditer(README):
        if match.group(1) != "sh":
            continue
        for line in match.group(2).splitlines():
            for step in COMMENT.sub("", line).split(" && "):
                if step.strip().startswith("fizz "):
                    commands.append(step.strip())
    return commands


def transcripts() -> list[tuple[str, str]]:
    """($ command, its output) pairs of the plain blocks."""
    pairs: list[tuple[str, str]] = []
    for match in BLOCK.finditer(README):
        if match.group(1):
            continue
        first = len(pairs)
        for line in match.group(2).splitlines():
            if line.startswith("$ "):
                pairs.append((line[2:], ""))
            elif len(pairs) > first:
                pairs[-1] = (pairs[-1][0], pairs[-1][1] + line + "\n")
    return pairs


def curl_commands() -> list[str]:
    spans = re.findall(r"`(curl [^`]+)`", README)
    return [span for span in spans if "..." not in span and "<" not in span]


def runs_until_stopped(command: str) -> bool:
    words = command.split()
    return words[1] == "serve" or (words[1] == "work" and "--drain" not in words)


def test_the_readme_has_the_examples_this_test_runs() -> None:
    commands = sh_commands()
    assert "fizz add FizzBuzz -1d" in commands
    assert "fizz add --file examples/tasks.jsonl" in commands
    assert "fizz work --drain" in commands  # from the first set-up command
    assert any(runs_until_stopped(c) and c.startswith("fizz serve") for c in commands)
    assert ("fizz add Fuzz", "Error: unknown task type 'Fuzz': use one of fizz, buzz, "
            "fizzbuzz\n") in transcripts()
    assert any("content-type: application/json" in c and "/tasks" in c
               for c in curl_commands())
    assert {"fizz schedule add Fizz --every 5m", "fizz schedule show 2 --next 10",
            "fizz schedule delete 2"} <= set(commands)
    assert ("fizz schedule add Fizz --every 5m --tz Europe/Pariss", "Error: unknown time zone "
            "'Europe/Pariss': did you mean 'Europe/Paris'?\n") in transcripts()
    assert any(c.endswith("localhost:8000/schedules") for c in curl_commands())
    for sample in re.findall(r"examples/[\w.]+", README):
        assert (ROOT / sample).is_file(), sample


@pytest.fixture
def shell(database: str) -> dict[str, str]:
    """The environment the README's commands run in: this venv's fizz, this test's database."""
    bin_dir = str(Path(sys.executable).parent)
    assert (Path(bin_dir) / "fizz").exists(), "fizz is not installed in this environment"
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FIZZ_DATABASE_URL": database}


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.slow
def test_every_example_of_the_readme_works(database: str, shell: dict[str, str]) -> None:
    with psycopg.connect(database) as conn:  # so that `fizz show 42` has a task 42
        conn.execute("INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                     "now() + interval '1 hour' FROM generate_series(1, 45)")
    for command in sh_commands():
        if command.startswith("fizz top"):
            continue  # it draws on a terminal: tests/acceptance/test_top.py runs it in a pty
        if runs_until_stopped(command):
            run_until_stopped(command, shell)
            continue
        done = run(command, shell)
        assert done.returncode == 0, (command, done.stderr)
        assert "Traceback" not in done.stderr, command
    for command, output in transcripts():
        done = run(command, shell)
        assert done.stdout + done.stderr == output, command


def run_until_stopped(command: str, env: dict[str, str]) -> None:
    port = None
    if command.startswith("fizz serve"):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command += f" --port {port}"
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if port is None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if " ready: " in line:
                    break
            else:
                raise AssertionError(f"{command} never became ready")
        else:
            wait_listening(port, proc)
            for curl in curl_commands():
                command = curl.replace("localhost:8000", f"127.0.0.1:{port}")
                if shutil.which("curl"):
                    done = run(command, env)
                    assert done.returncode == 0, (curl, done.stderr)
                    body = done.stdout
                else:  # CI counts on nothing but Python: the same request, made as curl would
                    body = curl_in_python(command)
                answer = json.loads(body)
                assert not (isinstance(answer, dict) and "error" in answer), (curl, answer)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, command
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def curl_in_python(command: str) -> str:
    """The request `curl [-X METHOD] [-H HEADER]... [-d DATA] URL` makes, with curl's
    defaults (POST with -d, and then a form content type unless -H names one)."""
    words = shlex.split(command)[1:]
    method, headers, data, url = None, {}, None, None
    while words:
        word = words.pop(0)
        if word == "-X":
            method = words.pop(0)
        elif word == "-H":
            name, _, value = words.pop(0).partition(":")
            headers[name.strip().lower()] = value.strip()
        elif word == "-d":
            data = words.pop(0).encode()
            headers.setdefault("content-type", "application/x-www-form-urlencoded")
        elif word.startswith("-"):
            raise AssertionError(f"curl option {word} is not emulated: install curl")
        else:
            url = word if "://" in word else f"http://{word}"
    assert url is not None, command
    request = urllib.request.Request(url, data=data, headers=headers,
                                     method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:  # curl prints the body of an error answer too
        return exc.read().decode()


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "fizz serve did not listen"
        time.sleep(0.05)
