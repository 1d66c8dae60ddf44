"""The sandbox's worker process: a warm zygote that forks one jailed child per Python session.

Run by `icrl_lite.tools.python` as `python -I _sandbox_worker.py FD CONFIG_JSON`, never imported by the
library (it must stay stdlib-only: the zygote should not carry torch). FD is a SOCK_SEQPACKET control socket.

Zygote loop: import the allowed modules once, then for every `spawn` message (which carries one end of a fresh
socket pair) fork a child and reply with its pid. The child jails itself (`_jail`) and then serves `run`
requests on its socket until the parent closes it. Forking a warm zygote costs a few milliseconds, so every
rollout gets a pristine interpreter without paying Python's start-up and imports again.
See `icrl_lite/tools/python.py` for the threat model.
"""

import ast
import builtins
import io
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import traceback
import types

MAX_MESSAGE = 1 << 20
NOBODY = 65534

# Audit events blocked outright (exact names) and by prefix. Everything else is allowed, with the
# path-bearing events checked below.
BLOCKED_EVENTS = frozenset({
    "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.kill", "os.killpg",
    "os.putenv", "os.unsetenv", "os.chdir", "os.symlink", "os.link", "os.chown", "os.chflags", "os.lchflags",
    "os.setxattr", "os.removexattr", "os.startfile", "os.add_dll_directory",
    "sys.settrace", "sys.setprofile", "sys.addaudithook", "sys._current_frames",
    "code.__new__", "builtins.breakpoint", "pickle.find_class", "mmap.__new__", "webbrowser.open",
    "sqlite3.connect", "sqlite3.enable_load_extension", "sqlite3.load_extension",
    "signal.pthread_kill", "resource.setrlimit", "resource.prlimit", "fcntl.fcntl", "fcntl.ioctl",
    "fcntl.flock", "fcntl.lockf", "urllib.Request", "shutil.chown",
})
BLOCKED_PREFIXES = (
    "subprocess.", "socket.", "ctypes.", "_thread.", "gc.", "syslog.", "http.", "ftplib.", "smtplib.",
    "poplib.", "imaplib.", "nntplib.", "telnetlib.", "winreg.", "msvcrt.", "_winapi.", "cpython.",
)
# Events that change the file system: every path argument must lie inside the session directory, and the
# dir_fd arguments (argument positions below) must be unset (-1 or None), or the event is denied.
WRITE_EVENTS = {
    "os.remove": (1,), "os.rmdir": (1,), "os.mkdir": (2,), "os.rename": (2, 3), "os.chmod": (2,),
    "os.utime": (3,), "os.truncate": (), "os.mkfifo": (2,), "os.mknod": (3,), "shutil.copyfile": (),
    "shutil.copymode": (), "shutil.copystat": (), "shutil.copytree": (), "shutil.move": (), "shutil.rmtree": (1,),
    "shutil.make_archive": (), "shutil.unpack_archive": (), "tempfile.mkstemp": (), "tempfile.mkdtemp": (),
}
# Events that read the file system: paths inside the session directory or Python's own installation.
READ_EVENTS = frozenset({"os.listdir", "os.scandir", "glob.glob", "glob.glob/2", "os.walk", "os.fwalk", "os.listxattr"})
# Modules whose loading is denied even when an allowed module asks for them (a module or any submodule).
DENIED_IMPORTS = frozenset({
    "ctypes", "_ctypes", "subprocess", "_posixsubprocess", "socket", "_socket", "ssl", "_ssl", "select",
    "selectors", "multiprocessing", "_multiprocessing", "pty", "fcntl", "mmap", "_sqlite3", "sqlite3",
    "urllib.request", "http.client", "ftplib", "smtplib", "telnetlib", "webbrowser", "asyncio", "pdb",
})


def main() -> None:
    fd, config = int(sys.argv[1]), json.loads(sys.argv[2])
    for name in config["modules"]:
        try:
            __import__(name)
        except ImportError:
            pass
    control = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 1)
        except OSError:
            return
        if not message:
            return  # the parent is gone
        request = json.loads(message)
        pid = os.fork()
        if pid == 0:
            control.close()
            status = 0
            try:
                serve(socket.socket(fileno=fds[0]), request["limits"], config["modules"])
            except BaseException:  # noqa: BLE001 - a child never returns into the zygote loop
                status = 1
            os._exit(status)
        os.close(fds[0])
        control.send(json.dumps({"pid": pid}).encode())


# ---- one session ---------------------------------------------------------------------------------------
def serve(conn: socket.socket, limits: dict, modules: list[str]) -> None:
    workdir = _jail(limits)
    conn.send(json.dumps({"pid": os.getpid(), "workdir": workdir}).encode())
    allowed = frozenset(modules)
    namespace = {"__name__": "__main__", "__builtins__": _safe_builtins(allowed)}
    violations: list[str] = []
    _install_guard(workdir, _readable_roots(), violations)
    while True:
        message = conn.recv(MAX_MESSAGE)
        if not message:
            return
        code = json.loads(message)["code"]
        result = execute(code, namespace, limits["max_output"], violations)
        conn.send(json.dumps(result).encode())
        if result["violation"]:
            return  # recycle: a child that tripped a guard is never reused


def _jail(limits: dict) -> str:
    """Own process group, fresh working directory, OS limits, no network (if permitted), uid nobody (if root)."""
    os.setsid()
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="icrl-py-"))
    os.chdir(workdir)
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):  # stdin reads nothing; C-level writes to stdout/stderr go nowhere
        os.dup2(null, target)
    os.close(null)
    sys.stdin = io.StringIO("")
    _unshare_network()
    if os.geteuid() == 0:
        os.chown(workdir, NOBODY, NOBODY)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    baseline = _address_space()
    _limit(resource.RLIMIT_AS, baseline + limits["memory_mb"] * (1 << 20))
    _limit(resource.RLIMIT_CPU, limits["cpu_seconds"])
    _limit(resource.RLIMIT_FSIZE, limits["max_file_mb"] * (1 << 20))
    _limit(resource.RLIMIT_NPROC, 0)  # no child processes (not enforced for root, hence the uid drop)
    _limit(resource.RLIMIT_CORE, 0)
    sys.setrecursionlimit(limits["recursion_limit"])
    return workdir


def _limit(kind: int, value: int) -> None:
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(kind)
        if hard == resource.RLIM_INFINITY or value < hard:
            raise
        resource.setrlimit(kind, (hard, hard))  # an existing lower hard limit is already stricter


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _unshare_network() -> None:
    """Move into an empty network namespace when the kernel lets us (root, or unprivileged user namespaces)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.unshare(0x40000000)  # CLONE_NEWNET; failure (EPERM) leaves the audit guard as the network barrier
    except (OSError, AttributeError):
        pass


def _readable_roots() -> tuple[str, ...]:
    """Directories the code may read: Python's installation (for lazy imports) and nothing else outside the jail."""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.__file__))}
    roots |= {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
    return tuple(sorted(roots))


def _safe_builtins(allowed: frozenset) -> dict:
    """The builtins the sandboxed code sees: an import restricted to the allow-list, no breakpoint/help/input."""
    safe = dict(vars(builtins))
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        top = name.partition(".")[0]
        if level != 0 or top not in allowed:
            raise ImportError(f"import of {name!r} is not allowed in the sandbox; allowed modules: {', '.join(sorted(allowed))}")
        return real_import(name, globals, locals, fromlist, level)

    safe["__import__"] = guarded_import
    for name in ("breakpoint", "help", "input", "exit", "quit", "copyright", "credits", "license"):
        safe.pop(name, None)
    return safe


def _install_guard(workdir: str, readable: tuple, violations: list) -> None:
    """Add the audit hook that enforces the policy below.

    The hook's functions are rebuilt with private globals (and a private copy of the builtins), so code that
    reaches this module through frames and rebinds `os`, `builtins.any` or a constant cannot change them;
    nothing the sandboxed code can reach refers to those functions or their globals.
    """
    private = {
        "__builtins__": dict(vars(builtins)),
        "JAIL": (workdir,), "READABLE": (workdir, *readable), "RECORD": violations.append,
        "GETCWD": os.getcwd, "FSPATH": os.fspath, "LOADED": sys.modules, "PATHLIKE": (str, bytes, os.PathLike),
        "WRITE_FLAGS": os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC,
        "BLOCKED_EVENTS": BLOCKED_EVENTS, "BLOCKED_PREFIXES": BLOCKED_PREFIXES,
        "WRITE_EVENTS": types.MappingProxyType(dict(WRITE_EVENTS)),  # a private copy: the module's dict is reachable
        "READ_EVENTS": READ_EVENTS, "DENIED_IMPORTS": DENIED_IMPORTS,
    }
    for fn in (_normalise, _inside, _deny, _guard):
        private[fn.__name__] = types.FunctionType(fn.__code__, private, fn.__name__, fn.__defaults__)
    sys.addaudithook(private["_guard"])


# The guard's functions. They run with the private globals built above, never with this module's.
def _normalise(path):
    """Absolute, `.`/`..`-free form of a str or bytes path, without touching the file system."""
    p = FSPATH(path)  # noqa: F821 - private global
    if isinstance(p, bytes):
        p = p.decode("utf-8", "surrogateescape")
    if not p.startswith("/"):
        p = GETCWD() + "/" + p  # noqa: F821
    parts = []
    for part in p.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


def _inside(path, roots):
    if not isinstance(path, (str, bytes)):  # an fd, or a PathLike whose answer could change between checks
        return False
    p = _normalise(path)
    return any(p == root or p.startswith(root.rstrip("/") + "/") for root in roots)


def _deny(event, detail):
    RECORD(event)  # noqa: F821
    raise PermissionError(f"{detail} is not allowed in the sandbox")


def _guard(event, args):
    if event in BLOCKED_EVENTS or event.startswith(BLOCKED_PREFIXES):  # noqa: F821
        _deny(event, event)
    elif event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if mode is not None else bool(flags & WRITE_FLAGS)  # noqa: F821
        if not _inside(path, JAIL if writing else READABLE):  # noqa: F821
            _deny(event, f"{'writing' if writing else 'reading'} {path!r}")
    elif event in WRITE_EVENTS:  # noqa: F821
        dir_fd_set = any(args[i] not in (None, -1) for i in WRITE_EVENTS[event] if i < len(args))  # noqa: F821
        paths = [a for a in args if isinstance(a, PATHLIKE)]  # noqa: F821
        if dir_fd_set or not paths or not isinstance(args[0], PATHLIKE) or not all(_inside(p, JAIL) for p in paths):  # noqa: F821
            _deny(event, f"{event} on {args[0]!r}")
    elif event in READ_EVENTS:  # noqa: F821
        if not all(_inside(a, READABLE) for a in args if isinstance(a, PATHLIKE)):  # noqa: F821
            _deny(event, f"{event} on {args[0]!r}")
    elif event == "import" and args[0] not in LOADED:  # noqa: F821
        name = args[0]
        if any(name == d or name.startswith(d + ".") for d in DENIED_IMPORTS):  # noqa: F821
            _deny(event, f"importing {name!r}")


# ---- running code ---------------------------------------------------------------------------------------
class BoundedWriter(io.TextIOBase):
    """A stdout that keeps the first `limit` characters and counts the rest."""

    def __init__(self, limit: int):
        self.limit, self.parts, self.size = limit, [], 0

    def write(self, text) -> int:
        text = str(text)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
        self.size += len(text)
        return len(text)

    def getvalue(self) -> str:
        value = "".join(self.parts)
        if self.size > self.limit:
            value += f"\n... [{self.size - self.limit} more characters of output truncated]"
        return value


def execute(code: str, namespace: dict, max_output: int, violations: list) -> dict:
    """Run one block like a notebook cell: stdout, then the repr of a trailing expression, or the error's last line."""
    out = BoundedWriter(max_output)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = out
    error, memory = None, False
    before = len(violations)
    try:
        tree = ast.parse(code, "<python>", "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<python>", "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<python>", "eval"), namespace)
            if value is not None:
                out.write(repr(value))
    except MemoryError:
        error, memory = "MemoryError: the memory limit was exceeded", True
    except BaseException as e:  # noqa: BLE001 - every failure of the user's code is its observation
        error = traceback.format_exception_only(type(e), e)[-1].strip()
    finally:
        sys.stdout, sys.stderr = saved
    return {"output": out.getvalue(), "error": error, "violation": memory or len(violations) > before,
            "blocked": violations[before:]}


if __name__ == "__main__":
    main()
