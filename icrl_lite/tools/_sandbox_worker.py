"""The sandbox's worker process: a warm zygote that forks one jailed child per Python session.

Run by `icrl_lite.tools.python` as `python -I _sandbox_worker.py FD CONFIG_JSON`, never imported by the
library (it must stay stdlib-only: the zygote should not carry torch). FD is a SOCK_SEQPACKET control socket.

Start-up: when root, move into an empty network namespace (through ctypes) and re-exec, so that the zygote's
image never holds ctypes; then import the allowed modules and all their submodules once (with a stand-in
`ctypes`: raw memory access would bypass every in-process guard; see `_preload`) and delete the few functions
that act on other processes or create files without an audit event. Zygote loop: for every `spawn` message
(which carries one end of a fresh socket pair) fork a child and reply with its pid; reap exited children; when
the parent goes away, kill the children still running.
The child jails itself (`_jail`) and then serves `run` requests on its socket until the parent closes it.
Forking a warm zygote costs a few milliseconds, so every rollout gets a pristine interpreter without paying
Python's start-up and imports again. See `icrl_lite/tools/python.py` for the threat model.
"""

import ast
import builtins
import gc
import importlib
import io
import json
import os
import pkgutil
import resource
import signal
import socket
import struct
import sys
import tempfile
import traceback
import types

MAX_MESSAGE = 1 << 20
NOBODY = 65534
SESSION_UID_BASE = 1_000_000_000  # as root, session uid = base + pid: sessions cannot signal or read one another
MAX_OPEN_FILES = 64  # bounds what in-memory files (memfd, pipes) can hold: each is also capped by max_file_mb
IN_NETNS = "--in-netns"

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
# Events that change the file system: (positions of path arguments, positions of dir_fd arguments). Every
# path must be a str or bytes inside the session directory and every dir_fd unset (-1 or None).
WRITE_EVENTS = {
    "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)), "os.rename": ((0, 1), (2, 3)),
    "os.chmod": ((0,), (2,)), "os.utime": ((0,), (3,)), "os.truncate": ((0,), ()),
    "shutil.copyfile": ((0, 1), ()), "shutil.copymode": ((0, 1), ()),
    "shutil.copystat": ((0, 1), ()), "shutil.copytree": ((0, 1), ()), "shutil.move": ((0, 1), ()),
    "shutil.rmtree": ((0,), (1,)), "shutil.make_archive": ((0, 2), ()), "shutil.unpack_archive": ((0, 1), ()),
    "tempfile.mkstemp": ((0,), ()), "tempfile.mkdtemp": ((0,), ()),
}
# Events that read the file system: positions of path arguments, which must lie inside the session directory
# or Python's own installation (a file descriptor passes: it was opened through a checked `open`).
READ_EVENTS = {
    "os.listdir": (0,), "os.scandir": (0,), "glob.glob": (0,), "glob.glob/2": (0, 2), "os.walk": (0,),
    "os.fwalk": (0,), "os.listxattr": (0,), "os.getxattr": (0,),
}
# Modules whose loading is denied even when an allowed module asks for them: a name is denied when any of its
# dotted components is listed (so neither `x._ctypes` nor `_ctypes` loads), or it starts with a dotted entry.
DENIED_IMPORTS = (
    "ctypes", "_ctypes", "subprocess", "_posixsubprocess", "socket", "_socket", "ssl", "_ssl", "select",
    "selectors", "multiprocessing", "_multiprocessing", "pty", "fcntl", "mmap", "_sqlite3", "sqlite3",
    "urllib.request", "http.client", "ftplib", "smtplib", "telnetlib", "webbrowser", "asyncio", "pdb",
    "_testcapi", "_testinternalcapi", "_testbuffer", "_testmultiphase", "_xxsubinterpreters", "_xxtestfuzz",
)
# Submodules the zygote does not preload: test suites, and `__main__` modules (they run a program).
NOT_PRELOADED = frozenset({"tests", "benchmarks", "conftest", "__main__"})
# Functions that act on other processes, start them, or create files, without raising an audit event (in
# Python 3.11). The zygote deletes them before forking, together with `_imp.create_builtin`, which could
# re-create the builtin modules holding them; `_posixsubprocess` cannot be re-created either, as loading it is
# a denied import. (Unaudited reads of metadata, like os.stat or os.readlink, stay: they change nothing.)
UNAUDITED = {
    "posix": ("pidfd_open", "sched_setaffinity", "sched_setparam", "sched_setscheduler", "setpriority", "mkfifo",
              "mknod", "chroot"),
    "_signal": ("pidfd_send_signal",),
    "_posixsubprocess": ("fork_exec",),
    "_imp": ("create_builtin",),
}


def main() -> None:
    fd, config = int(sys.argv[1]), json.loads(sys.argv[2])
    if IN_NETNS not in sys.argv and os.geteuid() == 0:
        _unshare_network()  # loads ctypes: re-exec so that the zygote's image never holds it
        os.execv(sys.executable, [sys.executable, "-I", __file__, *sys.argv[1:], IN_NETNS])
    _stub_ctypes()
    for name in config["modules"]:
        try:
            __import__(name)
        except ImportError:
            pass
    _preload(config["modules"])
    _remove_unaudited()
    child = _zygote(socket.socket(fileno=fd))
    if child is None:
        return
    status = 0
    try:
        serve(*child, config["modules"])
    except BaseException:  # noqa: BLE001 - a child never returns into the zygote's code
        status = 1
    os._exit(status)


def _unshare_network() -> None:
    """Move into an empty network namespace when the kernel lets us; failure leaves the audit guard as the barrier."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.unshare(0x40000000)  # CLONE_NEWNET
    except (OSError, AttributeError):
        pass


def _stub_ctypes() -> None:
    """Let sympy import (it reads `sizeof(c_long)`) without ctypes, whose raw memory access would defeat the guard."""
    stub = types.ModuleType("ctypes", "A stand-in: the sandbox has no ctypes.")

    class c_long:  # noqa: N801 - the name sympy imports
        pass

    stub.c_long, stub.sizeof = c_long, {c_long: struct.calcsize("l")}.__getitem__
    sys.modules["ctypes"], sys.modules["_ctypes"] = stub, None


def _preload(modules: list[str]) -> None:
    """Import every submodule of the allowed packages now, so that a session never loads one from disk.

    Packages import submodules lazily (`sympy.factor` imports `sympy.tensor.tensor` on first use). In a session
    that import would read the installation as the session's uid, which cannot when a directory above it is
    private (a clone in `mktemp -d`, Python under /root): FileFinder then reports ModuleNotFoundError. The walk
    loads nothing a session could not: while it runs, `_Fence` refuses the denied modules and any third-party
    package the allowed ones did not import themselves (optional integrations such as sympy's torch printer),
    and a submodule that fails to import is left out (a session importing it gets the same error).
    """
    known = {name.partition(".")[0] for name in sys.modules} | set(sys.stdlib_module_names)
    fence = _Fence(known)
    sys.meta_path.insert(0, fence)
    try:
        for name in modules:
            if hasattr(sys.modules.get(name), "__path__"):
                _import_submodules(sys.modules[name])
    finally:
        sys.meta_path.remove(fence)


def _import_submodules(package: types.ModuleType) -> None:
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if info.name.rpartition(".")[2] in NOT_PRELOADED:
            continue
        try:
            module = importlib.import_module(info.name)
        except (Exception, SystemExit):  # noqa: BLE001 - a third-party submodule that cannot load is skipped
            continue
        if info.ispkg:
            _import_submodules(module)


class _Fence:
    """A meta-path finder for `_preload`: refuses denied modules and top-level packages outside `known`."""

    def __init__(self, known: set):
        self.known = known

    def find_spec(self, name, path=None, target=None):
        parts = name.split(".")
        denied = any(e in parts or "." in e and (name == e or name.startswith(e + ".")) for e in DENIED_IMPORTS)
        if denied or parts[0] not in self.known:
            raise ImportError(f"the sandbox does not preload {name!r}")
        return None  # let the other finders load it


def _remove_unaudited() -> None:
    """Delete the `UNAUDITED` functions from every namespace and set that holds them (one gc pass, at start-up)."""
    doomed = [getattr(sys.modules[m], n) for m, names in UNAUDITED.items() if m in sys.modules for n in names
              if hasattr(sys.modules[m], n)]
    ids = {id(f) for f in doomed}
    for holder in gc.get_referrers(*doomed):
        if isinstance(holder, dict):
            for key in [k for k, v in holder.items() if id(v) in ids]:
                del holder[key]
        elif isinstance(holder, set):
            holder.difference_update(doomed)


def _zygote(control: socket.socket) -> tuple[socket.socket, dict] | None:
    """Fork a child per spawn message until the parent goes away. Returns (socket, limits) in a child, None here."""
    children: set[int] = set()
    control.settimeout(1.0)  # wake up now and then to reap exited children
    while True:
        _reap(children)
        try:
            message, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 1)
        except TimeoutError:
            continue
        except OSError:
            break
        if not message:
            break  # the parent is gone
        pid = os.fork()
        if pid == 0:
            control.close()
            return socket.socket(fileno=fds[0]), json.loads(message)["limits"]
        children.add(pid)
        os.close(fds[0])
        control.send(json.dumps({"pid": pid}).encode())
    for pid in children:  # not reaped yet, so these pids cannot belong to anyone else
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return None


def _reap(children: set) -> None:
    while children:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)


# ---- one session ---------------------------------------------------------------------------------------
def serve(conn: socket.socket, limits: dict, modules: list[str]) -> None:
    workdir = _jail(limits, conn.fileno())
    conn.send(json.dumps({"pid": os.getpid(), "workdir": workdir}).encode())
    allowed = frozenset(modules)
    namespace = {"__name__": "__main__", "__builtins__": _safe_builtins(allowed)}
    violations: list[str] = []
    sys.dont_write_bytecode = True  # a lazy import compiles in memory: the installation is outside the jail
    _install_guard(workdir, _python_roots(), violations)
    while True:
        message = conn.recv(MAX_MESSAGE)
        if not message:
            return
        code = json.loads(message)["code"]
        result = execute(code, namespace, limits["max_output"], violations)
        conn.send(json.dumps(result).encode())
        if result["violation"]:
            return  # recycle: a child that tripped a guard is never reused


def _jail(limits: dict, keep_fd: int) -> str:
    """Own process group, fresh working directory, OS limits, an unprivileged uid of its own (if root)."""
    os.setsid()
    os.closerange(3, keep_fd)  # nothing inherited from the zygote but the session's socket
    os.closerange(keep_fd + 1, os.sysconf("SC_OPEN_MAX"))
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="icrl-py-"))
    os.chdir(workdir)
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):  # stdin reads nothing; C-level writes to stdout/stderr go nowhere
        os.dup2(null, target)
    os.close(null)
    sys.stdin = io.StringIO("")
    if os.geteuid() == 0:
        _drop_privileges(workdir)
    baseline = _address_space()
    _limit(resource.RLIMIT_AS, baseline + limits["memory_mb"] * (1 << 20))
    _limit(resource.RLIMIT_CPU, limits["cpu_seconds"])
    _limit(resource.RLIMIT_FSIZE, limits["max_file_mb"] * (1 << 20))
    _limit(resource.RLIMIT_NOFILE, MAX_OPEN_FILES)
    _limit(resource.RLIMIT_NPROC, 0)  # no child processes (not enforced for root, hence the uid drop)
    _limit(resource.RLIMIT_CORE, 0)
    sys.setrecursionlimit(limits["recursion_limit"])
    return workdir


def _drop_privileges(workdir: str) -> None:
    """Become a uid no other session (or process) has; `nobody` where that uid is unmapped (a user namespace)."""
    for uid in (SESSION_UID_BASE + os.getpid(), NOBODY):
        try:
            os.chown(workdir, uid, uid)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            return
        except OSError:
            continue
    raise PermissionError("the sandbox could not drop root privileges")


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


def _python_roots() -> tuple[str, ...]:
    """Python's installation (for lazy imports and native modules): the only place outside the jail code may read.

    Each directory both as named (the import system reads through sys.path as it is spelled, which the guard
    compares lexically) and resolved: the same files either way, as no session can create or change a symlink.
    """
    dirs = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.__file__)]
    dirs += [p for p in sys.path if p and os.path.isdir(p)]
    return tuple(sorted({form(p) for p in dirs for form in (os.path.abspath, os.path.realpath)}))


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


def _install_guard(workdir: str, python_roots: tuple, violations: list) -> None:
    """Add the audit hook `_guard`, its policy bound as keyword-only defaults.

    The sandboxed code can see the hook's frame (in the traceback of every denial), hence its globals, builtins
    and a snapshot of its locals. So the hook is one function that reads no globals or builtins (its globals are
    an empty throwaway dict), calls no Python helpers, and is given only immutable values and builtin functions:
    nothing reachable from that frame, this module, `builtins` or `os` changes what it checks. The function
    object itself, which holds the defaults, is referenced only by the interpreter's list of audit hooks.
    """
    hook = types.FunctionType(_guard.__code__, {"__builtins__": {}}, "sandbox_guard")
    hook.__kwdefaults__ = {
        "jail": (workdir,), "readable": (workdir, *python_roots), "native": python_roots, "record": violations.append,
        "blocked": BLOCKED_EVENTS, "blocked_prefixes": BLOCKED_PREFIXES,
        "write_names": frozenset(WRITE_EVENTS), "writes": tuple((k, *v) for k, v in WRITE_EVENTS.items()),
        "read_names": frozenset(READ_EVENTS), "reads": tuple(READ_EVENTS.items()), "denied_imports": DENIED_IMPORTS,
        "write_flags": os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC,
        "PermissionError": PermissionError, "type": type, "str": str, "bytes": bytes, "int": int, "len": len,
    }
    sys.addaudithook(hook)


def _guard(event, args, *, jail, readable, native, record, blocked, blocked_prefixes, write_names, writes,  # noqa: A002
           read_names, reads, denied_imports, write_flags, PermissionError, type, str, bytes, int, len):  # noqa: N803
    """The audit hook's code: raise PermissionError for an operation outside the policy (see `_install_guard`).

    Paths are accepted only as exact str or bytes (a str subclass or a PathLike could answer differently when
    the OS uses it) and are normalised lexically against the session directory, the process's working directory
    (`os.chdir` is blocked and no symlink can be made, so this is where the OS resolves them).
    """
    denial = None
    what = "using"
    paths = ()  # arguments that must be paths under one of `roots`
    roots = readable
    if event in blocked or event.startswith(blocked_prefixes):
        denial = event
    elif event == "open":
        path, mode, flags = args
        if type(mode) is str:
            writing = "w" in mode or "a" in mode or "x" in mode or "+" in mode
        else:
            writing = type(flags) is not int or flags & write_flags != 0
        what = "writing" if writing else "reading"
        paths = (path,)
        roots = jail if writing else readable
        relative = type(path) is str and not path.startswith("/") or type(path) is bytes and not path.startswith(b"/")
        if mode is None and relative:
            denial = f"os.open of a relative path ({path!r}: a dir_fd could redirect it)"
    elif event in write_names:
        for name, path_positions, fd_positions in writes:
            if name == event:
                break
        what = event + " on"
        roots = jail
        paths = ()
        for i in path_positions:
            if i < len(args):
                paths = (*paths, args[i])
        if len(args) == 0 or args[0] is None:
            denial = f"{event} without a path"
        for i in fd_positions:
            if i < len(args) and args[i] is not None and not (type(args[i]) is int and args[i] == -1):
                denial = f"{event} relative to a directory descriptor"
    elif event in read_names:
        for name, path_positions in reads:
            if name == event:
                break
        what = event + " on"
        for i in path_positions:
            if i < len(args) and type(args[i]) is not int:
                paths = (*paths, args[i])
    elif event == "import":
        name, filename = args[0], args[1]
        if type(name) is not str:
            denial = "importing a module whose name is not a str"
        else:
            components = name.split(".")
            for entry in denied_imports:
                if entry in components or "." in entry and (name == entry or name.startswith(entry + ".")):
                    denial = f"importing {name!r}"
                    break
        if filename is not None:
            what, paths, roots = "loading native code from", (filename,), native
    for path in paths:
        if denial is not None:
            break
        if path is None:
            continue
        if type(path) is bytes:
            text = path.decode("utf-8", "surrogateescape")
        elif type(path) is str:
            text = path
        else:
            denial = f"{what} a path given as {type(path).__name__}"
            break
        if not text.startswith("/"):
            text = jail[0] + "/" + text
        parts = []
        for part in text.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part and part != ".":
                parts.append(part)
        text = "/" + "/".join(parts)
        for root in roots:
            if text == root or text.startswith(root + "/"):
                break
        else:
            denial = f"{what} {path!r}"
    if denial is not None:
        record(denial)
        raise PermissionError(f"{denial} is not allowed in the sandbox")


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
        if len(error) > max_output:
            error = error[:max_output] + f"... [{len(error) - max_output} more characters of the error truncated]"
    finally:
        sys.stdout, sys.stderr = saved
    blocked = violations[before:]
    if blocked and error is None:  # the denial was caught (by the code or a library): still say what happened
        error = f"PermissionError: {blocked[0]} is not allowed in the sandbox"
    return {"output": out.getvalue(), "error": error, "violation": memory or bool(blocked), "blocked": blocked}


if __name__ == "__main__":
    main()
