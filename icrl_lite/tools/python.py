"""Restricted Python tool: `<python>code</python>` -> `<output>...</output>`, run in a jailed process.

Each rollout gets its own interpreter (a *session*): successive blocks of one rollout share variables and
definitions, like notebook cells; different rollouts never share anything. Interpreters are forked from a warm
zygote process that has already imported the allowed modules (numpy, sympy, ...) and all their submodules, so a
new session costs a fork (milliseconds), not a Python start-up, a call within a session costs a socket round
trip, and a package's lazy imports (sympy.factor loads sympy.tensor.tensor on first use) work even where the
session's uid cannot read the installation (a clone in a 0700 `mktemp -d` directory, Python under /root).
A session's interpreter is thrown away (and transparently replaced on its next call) after any violation:
a blocked operation, a timeout, the memory limit, or a crash.

Threat model. The code is untrusted: an RL policy writes whatever raises its reward, and may write hostile
or broken code by accident. The sandbox protects the HOST and the TRAINING RUN:
- time: wall-clock timeout per call (the interpreter is SIGKILLed) and a CPU-time limit;
- memory: an address-space limit above the warm interpreter's baseline; output and file-size caps;
- processes: no fork/exec/spawn/subprocess (audit hook), RLIMIT_NPROC = 0, and, when the trainer runs as root
  (root ignores RLIMIT_NPROC), a uid of the session's own (`nobody` where that uid is unavailable), so sessions
  cannot signal the trainer or one another; the few functions that reach other processes or create files
  without an audit event (pidfd_send_signal, sched_setaffinity, setpriority, mkfifo, mknod, ...) are deleted
  from the interpreter; a session's process is killed whenever the session discards it, and the zygote kills
  its remaining children when it exits;
- files: writes, deletes and renames only inside a fresh per-session directory (removed afterwards); reads
  only there and in Python's own installation (so no /etc, /proc/*/environ, home directories, keys), whose
  modules a session compiles in memory (it never writes bytecode there); a path
  must reach the hook as an exact str or bytes (a str subclass could show the hook one path and the OS
  another), and dir_fd arguments (and relative paths in `os.open`, whose dir_fd the hook cannot see) are
  refused; metadata of other files (os.stat, os.readlink) stays visible;
- network: no sockets (audit hook), plus an empty network namespace when the kernel allows it;
- secrets: the interpreter starts from a clean environment (no inherited variables) with stdin closed;
- escapes through the language: imports are restricted to an allow-list, and every operation that reaches
  the OS (os.system, open, socket, signals to other processes, ...) passes a CPython audit hook (PEP 578)
  that cannot be removed from Python. `__subclasses__`, `__builtins__` or frame walking can reach the `os`
  module, but not around the hook: its policy is bound to the hook function alone, which reads no globals or
  builtins, so tampering with `builtins`, `os`, the worker's module or the hook's own frame (visible in the
  traceback of every denial) changes nothing it checks. ctypes (raw memory access) is never loaded: the
  zygote gives sympy a stand-in, and native modules load only from Python's installation.
NOT protected against: memory-corruption bugs in CPython or C extensions (crafted bytecode loaded through the
import machinery or marshal, say); a determined attacker with such a bug escapes the in-process guards,
leaving only the OS limits (a uid of its own when root, rlimits, the per-session directory, the network
namespace). When the trainer is not root those OS limits cannot separate uids. Disk use inside the session
directory is capped per file (max_file_mb) but not in total. Side channels and CPU contention are not
isolated. For untrusted users (rather than an RL policy) run training in a container or VM as well.
Linux only (fork, /proc, rlimits, SOCK_SEQPACKET).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from icrl_lite.tools.base import Tool

WORKER = Path(__file__).with_name("_sandbox_worker.py")
MAX_MESSAGE = 1 << 20
DEFAULT_MODULES = (
    "math", "cmath", "statistics", "fractions", "decimal", "numbers", "itertools", "functools", "operator",
    "collections", "heapq", "bisect", "re", "string", "datetime", "calendar", "json", "random", "copy",
    "typing", "dataclasses", "enum", "time", "numpy", "sympy",
)
RESTARTED = "the interpreter was restarted, earlier variables are lost"


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one Python session."""

    timeout: float = 5.0  # wall-clock seconds per call
    cpu_seconds: int = 30  # CPU seconds per session
    memory_mb: int = 512  # address space above the warm interpreter's baseline
    max_output: int = 1000  # characters of observation
    max_file_mb: int = 8  # largest file the code may write
    recursion_limit: int = 400
    modules: tuple[str, ...] = DEFAULT_MODULES  # importable modules (and their submodules)

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.cpu_seconds < 1 or self.memory_mb < 16 or self.max_output < 1:
            raise ValueError("sandbox limits: timeout must be > 0, cpu_seconds >= 1, memory_mb >= 16, max_output >= 1")
        if self.max_file_mb < 0 or self.recursion_limit < 50:
            raise ValueError("sandbox limits: max_file_mb must be >= 0 and recursion_limit >= 50")


class PythonSandbox:
    """A warm zygote process from which every session forks a fresh, jailed interpreter. Thread-safe."""

    def __init__(self, limits: SandboxLimits | None = None):
        if not sys.platform.startswith("linux"):
            raise RuntimeError("the Python sandbox needs Linux (fork, rlimits, /proc); run training on Linux or in a container")
        self.limits = limits or SandboxLimits()
        self._lock = threading.Lock()
        self._zygote: subprocess.Popen | None = None
        self._control: socket.socket | None = None

    def session(self) -> PythonSession:
        """A new interpreter whose state persists across its `run` calls; close it when the rollout ends."""
        return PythonSession(self)

    def run(self, code: str) -> str:
        """Run `code` in a throwaway session and return the observation."""
        with self.session() as session:
            return session.run(code)

    def as_tool(self) -> Tool:
        return Tool("python", "<python>", "</python>", self.run, result_open="<output>", result_close="</output>",
                    session=self.session)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __del__(self) -> None:
        self._stop()

    # ---- the zygote -------------------------------------------------------------------------------------
    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        config = json.dumps({"modules": list(self.limits.modules)})
        self._zygote = subprocess.Popen(
            [sys.executable, "-I", str(WORKER), str(theirs.fileno()), config], pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd="/",
            start_new_session=True,
        )
        theirs.close()
        ours.settimeout(120)  # the first spawn waits for the zygote's imports
        self._control = ours

    def _stop(self) -> None:
        """Close the control socket (the zygote then kills its sessions and exits); kill it if it lingers."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._zygote is not None and self._zygote.poll() is None:
            try:
                self._zygote.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._zygote.kill()
                self._zygote.wait()
        self._zygote = None

    def _spawn(self) -> tuple[int, socket.socket, str, int | None]:
        """Fork a jailed interpreter; returns (pid, its socket, its working directory, a pidfd for it or None)."""
        limits = {k: v for k, v in asdict(self.limits).items() if k != "modules"}
        with self._lock:
            for attempt in range(2):
                if self._zygote is None or self._zygote.poll() is not None:
                    self._stop()
                    self._start()
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                try:
                    socket.send_fds(self._control, [json.dumps({"limits": limits}).encode()], [theirs.fileno()])
                    reply = self._control.recv(4096)
                except OSError:
                    reply = b""
                finally:
                    theirs.close()
                if reply:
                    break
                ours.close()
                self._stop()  # a dead or wedged zygote: start a new one and try once more
            else:
                raise RuntimeError(f"the Python sandbox's worker failed to start; try `{sys.executable} -I {WORKER}` by hand")
        ours.settimeout(60)
        hello = ours.recv(MAX_MESSAGE)
        if not hello:
            ours.close()
            raise RuntimeError("a sandboxed interpreter died while jailing itself (are rlimits or setuid forbidden here?)")
        started = json.loads(hello)
        try:  # the child waits for its first request, so the pid is still its own
            pidfd = os.pidfd_open(started["pid"])
        except (AttributeError, OSError):  # no pidfds (Linux < 5.3): fall back to its process group
            pidfd = None
        return started["pid"], ours, started["workdir"], pidfd


class PythonSession:
    """One rollout's interpreter. `run` never raises for the code's faults: they are observations."""

    def __init__(self, sandbox: PythonSandbox):
        self.sandbox, self.limits = sandbox, sandbox.limits
        self._process: tuple[int, socket.socket, str, int | None] | None = None
        self.calls = 0

    def run(self, code: str) -> str:
        self.calls += 1
        if self._process is None:
            self._process = self.sandbox._spawn()
        conn = self._process[1]
        conn.settimeout(self.limits.timeout)
        request = json.dumps({"code": code}).encode()
        if len(request) > MAX_MESSAGE:
            return f"error: the code is longer than {MAX_MESSAGE} bytes"
        try:
            conn.send(request)
            reply = conn.recv(MAX_MESSAGE)
        except TimeoutError:
            self._discard()
            return f"error: timed out after {self.limits.timeout:g} s; {RESTARTED}"
        except OSError:
            reply = b""
        if not reply:
            self._discard()
            return f"error: the interpreter stopped (a crash, or the CPU-time or memory limit); {RESTARTED}"
        result = _parse_reply(reply)
        if result is None:  # the code wrote on the session's socket itself, or broke the worker's json
            self._discard()
            return f"error: the interpreter sent a malformed reply (did the code tamper with the worker?); {RESTARTED}"
        text = result["output"].rstrip("\n")  # print()'s final newline, as in the demonstrations
        if result["error"]:
            text = f"{text}\n{result['error']}" if text else result["error"]
        if result["violation"]:
            self._discard()
            text += f"\n({RESTARTED})"
        return _cap(text, self.limits.max_output) if text else "(no output: print() what you want to see)"

    def close(self) -> None:
        self._discard()

    def __enter__(self) -> PythonSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self._discard()

    def _discard(self) -> None:
        """Forget the interpreter: SIGKILL it (idle, busy, or pretending to be gone) and remove its directory."""
        if self._process is None:
            return
        pid, conn, workdir, pidfd = self._process
        self._process = None
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                select.select([pidfd], [], [], 1.0)  # readable once it has exited: then nothing writes to workdir
            else:
                os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # already gone (a pid reused since belongs to someone else: leave it)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        conn.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _parse_reply(reply: bytes) -> dict | None:
    """The worker's reply, or None when it is not one (the sandboxed code can write on its socket)."""
    try:
        result = json.loads(reply)
    except ValueError:
        return None
    if not isinstance(result, dict) or not isinstance(result.get("output"), str):
        return None
    if not isinstance(result.get("error"), (str, type(None))) or not isinstance(result.get("violation"), bool):
        return None
    return result


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... [output truncated to {limit} characters]"


def python_tool(**limits) -> Tool:
    """The `<python>` tool with the given `SandboxLimits` fields."""
    return PythonSandbox(SandboxLimits(**limits)).as_tool()
