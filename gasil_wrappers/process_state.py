"""ProcessGASILState: one GASIL owner in a server process, shared by sub-envs in subprocess workers.

With ``gym.vector.AsyncVectorEnv`` or SB3's ``SubprocVecEnv`` each sub-env lives in its own process, so
an in-process :class:`~gasil_wrappers.GASILState` would be copied into every worker and the copies would
drift apart (one D and one buffer per worker). Here instead:

- a **server process** owns the one real :class:`~gasil_wrappers.GASILState` (buffer, policy samples,
  D, optimizer, normalizer, counters, rng) and trains D on its cadence with GASILState's own code
  (:meth:`~gasil_wrappers.GASILState.add_episode`, :meth:`~gasil_wrappers.GASILState.record_samples`);
  after every round it publishes D's numpy snapshot in shared memory with a version counter;
- every process that steps envs uses a :class:`ProcessGASILState` **handle**, with the interface the
  wrappers use on a GASILState. Its hot path reads the version counter (one 8-byte load), copies the
  weights into a local :class:`DiscriminatorForward` when the version changed, computes −log D(s, a)
  locally, and ships policy samples in chunks and finished episodes over a socket;
- the handle pickles to a few strings (socket address, auth key, shared-memory path): pass it into
  thunks (``wrap_stack(env, config, state=owner)``), or let ``wrap_stack``/``gym.make`` with
  ``GASILConfig(backend="process")`` find it: the first stack built in the parent process starts the
  server; forked workers inherit it, spawned ones find it through an environment variable.

Lifecycle: the server stops when the owner's :meth:`ProcessGASILState.close` is called (or the owner
process exits), when every client in *another* process has closed
(``AsyncVectorEnv.close()``), when a client process dies without closing (a worker crash: every
other worker then raises :class:`GASILOwnerError` at its next step, the owner's calls raise it too), or
when the owner process dies (a watchdog polls the parent pid). The server is a daemon child process.

See ``docs/scale_out.md`` for the training cadence and what is identical to the in-process owner.

Example:
    >>> import gymnasium as gym
    >>> from gasil_wrappers import GASILConfig, wrap_stack
    >>> config = GASILConfig(gasil=True, d_every=64, seed=0, backend="process", group="doc-process")
    >>> with ProcessGASILState.start(config) as owner:
    ...     env = wrap_stack(gym.make("Pendulum-v1"), config, state=owner)
    ...     _ = env.reset(seed=1)
    ...     for _ in range(400):
    ...         _, reward, terminated, truncated, info = env.step([0.5])
    ...         if terminated or truncated:
    ...             _ = env.reset()
    ...     owner.diagnostics()["policy_steps"] >= 336, owner.ready
    (True, True)
"""

from __future__ import annotations

import base64
import copy
import hashlib
import mmap
import multiprocessing
import multiprocessing.connection as mpc
import os
import pickle
import signal
import sys
import tempfile
import threading
import traceback
import weakref
from contextlib import contextmanager

import gymnasium as gym
import numpy as np

from gasil_wrappers.config import GASILConfig
from gasil_wrappers.discriminator import DiscriminatorForward
from gasil_wrappers.reward import shaped_reward
from gasil_wrappers.state import GASILState, _flat_dim
from gasil_wrappers.topk import GoodTrajectoryBuffer

try:  # POSIX only; the process backend says so when it is started elsewhere
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["DiscriminatorSnapshot", "GASILOwnerError", "ProcessGASILState"]

# --- shared-memory layout -----------------------------------------------------------------------------
# int64 header words, then an error text, then D's snapshot as float64.
_SEQ, _VERSION, _ROUNDS, _STEPS, _STATUS, _SHIPPERS, _SERVER_PID = range(7)
_HEADER_WORDS = 8
_ERROR_OFFSET, _ERROR_BYTES = 8 * _HEADER_WORDS, 1024
_PAYLOAD_OFFSET = _ERROR_OFFSET + _ERROR_BYTES
_RUNNING, _CLOSED, _FAILED = 1, 2, 3

_ENV_PREFIX = "GASIL_PROCESS_OWNER_"
_owners: dict = {}  # (config, env_key) -> owner handle, in the process that started the server
_handles: weakref.WeakSet = weakref.WeakSet()  # every handle of this process (reset in forked children)


class GASILOwnerError(RuntimeError):
    """The process-backed GASIL owner is unusable: its server failed, was closed, or cannot be reached."""


# --- D's forward on published weights ------------------------------------------------------------------
#: Workers compute −log D with the same numpy forward the server's D uses, loaded from the published
#: flat snapshot (``DiscriminatorForward.dump``/``load``): given the same weights, bitwise the same values.
DiscriminatorSnapshot = DiscriminatorForward


# --- shared memory: a file in /dev/shm (tmpfs), mmapped; no resource tracker involved -------------------
def _shm_dir() -> str:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


class _SharedBlock:
    """The header, error text and D snapshot, mapped into this process. flock() guards the snapshot."""

    def __init__(self, path: str, payload_size: int, *, create: bool = False):
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        self.path = path
        self.fd = os.open(path, flags, 0o600)
        size = _PAYLOAD_OFFSET + 8 * payload_size
        if create:
            os.ftruncate(self.fd, size)
        elif os.fstat(self.fd).st_size != size:
            os.close(self.fd)
            raise GASILOwnerError(f"shared block {path} has the wrong size (another owner's?)")
        self.mm = mmap.mmap(self.fd, size)
        self.header = memoryview(self.mm)[:_ERROR_OFFSET].cast("q")  # plain Python ints: fast reads
        self.payload = np.frombuffer(self.mm, np.float64, payload_size, _PAYLOAD_OFFSET)

    @contextmanager
    def locked(self, exclusive: bool):
        fcntl.flock(self.fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def error_text(self) -> str:
        raw = bytes(self.mm[_ERROR_OFFSET: _ERROR_OFFSET + _ERROR_BYTES])
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def set_error_text(self, text: str) -> None:
        raw = text.encode("utf-8")[: _ERROR_BYTES - 1]
        self.mm[_ERROR_OFFSET: _ERROR_OFFSET + _ERROR_BYTES] = raw + b"\0" * (_ERROR_BYTES - len(raw))

    def close(self) -> None:
        self.header.release()
        self.payload = None
        try:
            self.mm.close()
        except BufferError:  # a view is still alive somewhere; the mapping goes with the process
            pass
        os.close(self.fd)


# --- the server -----------------------------------------------------------------------------------------
class _Stop(Exception):
    pass


class _Server:
    """Runs in the owner's child process: one GASILState, a socket for clients, a shared block."""

    def __init__(self, config, env_key, shm_path, owner_pid, authkey, control, keep_history):
        self.config, self.env_key, self.shm_path = config, env_key, shm_path
        self.owner_pid, self.control, self.keep_history = owner_pid, control, keep_history
        self.state = GASILState(config)
        self.block: _SharedBlock | None = None
        self.clients: dict = {}  # connection -> {"pid", "name", "remote", "shipped"}
        self.remote_seen = False
        self.min_seed: int | None = None
        self.history: dict[int, dict] = {}
        self.incoming: list = []
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe()
        address = f"\0gasil-{os.getpid()}-{os.urandom(6).hex()}" if sys.platform.startswith("linux") else None
        self.listener = mpc.Listener(address, family="AF_UNIX", authkey=authkey)

    # lifecycle
    def run(self) -> None:
        threading.Thread(target=self._accept_loop, daemon=True).start()
        self.control.send(("ready", self.listener.address, os.getpid()))
        while True:
            ready = mpc.wait([self.control, self.wake_r, *self.clients], timeout=0.25)
            if os.getppid() != self.owner_pid:
                raise _Stop(_FAILED, f"the owner process (pid {self.owner_pid}) died")
            for obj in ready:
                if obj is self.wake_r:
                    os.read(self.wake_r, 4096)
                    with self.lock:
                        new, self.incoming = self.incoming, []
                    for conn in new:
                        self.clients[conn] = {"pid": None, "name": "?", "remote": False, "shipped": False}
                elif obj is self.control:
                    self._on_control()
                else:
                    self._on_client(obj)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self.listener.accept()
            except OSError:
                return  # the listener was closed
            except Exception:  # a failed handshake (wrong key, client gone): ignore that client
                continue
            with self.lock:
                self.incoming.append(conn)
            os.write(self.wake_w, b"x")

    def shutdown(self, status: int, message: str) -> None:
        if status == _FAILED:
            print(f"gasil_wrappers: GASIL owner server (pid {os.getpid()}, group {self.config.group!r}): "
                  f"{message}; shutting down", file=sys.stderr, flush=True)
        if self.block is not None:
            with self.block.locked(True):
                self.block.set_error_text(message)
                self.block.header[_STATUS] = status
                self.block.header[_SEQ] += 1
        try:
            os.unlink(self.shm_path)
        except FileNotFoundError:
            pass
        try:
            self.control.send(("stopped", status, message))
        except OSError:
            pass
        self.listener.close()
        for conn in self.clients:
            conn.close()

    # messages
    def _on_control(self) -> None:
        try:
            msg = self.control.recv()
        except (EOFError, OSError):
            raise _Stop(_FAILED, f"lost the owner process (pid {self.owner_pid})") from None
        if msg[0] == "close":
            raise _Stop(_CLOSED, "the owner closed it")

    def _on_client(self, conn) -> None:
        info = self.clients[conn]
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                who = f"{'worker' if info['remote'] else 'client'} process {info['name']} (pid {info['pid']})"
                del self.clients[conn]
                conn.close()
                raise _Stop(_FAILED, f"{who} exited without closing its env (it crashed or was killed)") \
                    from None
            kind = msg[0]
            if kind == "samples":
                self._on_samples(msg[1], info)
            elif kind == "episode":
                self.state.add_episode(msg[1], msg[2], msg[3])
            elif kind == "seed":
                self.min_seed = msg[1] if self.min_seed is None else min(self.min_seed, msg[1])
            elif kind == "hello":
                info.update(pid=msg[1], name=msg[2], remote=msg[1] != self.owner_pid)
                self.remote_seen |= info["remote"]
            elif kind == "attach":
                conn.send(self._attach(msg[1], msg[2]))
            elif kind == "call":
                conn.send(self._call(msg[1], msg[2]))
            elif kind == "bye":
                del self.clients[conn]
                conn.close()
                if self.remote_seen and not any(c["remote"] for c in self.clients.values()):
                    raise _Stop(_CLOSED, "every worker process closed its envs")
                return
            else:
                raise ValueError(f"unknown message {kind!r}")
            if not conn.poll():
                return

    def _attach(self, obs_dim: int, act_dim: int):
        box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float64)  # noqa: E731
        try:
            self.state.attach(box(obs_dim), box(act_dim))
        except (TypeError, ValueError) as e:
            return ("error", type(e).__name__, str(e))
        if self.block is None:
            size = DiscriminatorSnapshot.size(obs_dim + act_dim, self.config.d_hidden)
            self.block = _SharedBlock(self.shm_path, size, create=True)
            self.block.header[_SERVER_PID] = os.getpid()
            self.block.header[_STATUS] = _RUNNING
            self._publish(weights=self.state.discriminator is not None)
        return ("ok", self.shm_path, self.block.payload.size)

    def _on_samples(self, rows: np.ndarray, info: dict) -> None:
        state = self.state
        if not info["shipped"]:
            info["shipped"] = True
            self.block.header[_SHIPPERS] += 1
        if state.rounds == 0 and self.min_seed is not None and \
                state.policy_steps + len(rows) >= self.config.round_every:
            state.seed_if_unset(self.min_seed)  # before D's init: the smallest reset seed of any worker
        if state.record_samples(rows):
            self._publish(weights=True)
        else:
            self.block.header[_STEPS] = state.policy_steps

    def _publish(self, *, weights: bool) -> None:
        state, block = self.state, self.block
        if block is None:
            return
        with block.locked(True):
            if weights and state.discriminator is not None:
                state.discriminator.forward.dump(block.payload)
            block.header[_VERSION] += 1
            block.header[_ROUNDS] = state.rounds
            block.header[_STEPS] = state.policy_steps
            block.header[_SEQ] += 1
        if self.keep_history and state.discriminator is not None:
            self.history[state.rounds] = copy.deepcopy(state.discriminator.state_dict())

    def _call(self, name: str, args: tuple):
        state = self.state
        try:
            if name == "diagnostics":
                result = state.diagnostics()
            elif name == "state_dict":
                result = state.state_dict()
            elif name == "load_state_dict":
                state.load_state_dict(args[0])
                self._publish(weights=True)
                result = None
            elif name == "buffer":
                result = state.buffer.state_dict()
            elif name == "history":
                result = dict(self.history)
            elif name == "info":
                result = {
                    "server_pid": os.getpid(), "clients": len(self.clients),
                    "worker_processes": sorted({c["pid"] for c in self.clients.values() if c["remote"]}),
                    "rounds": state.rounds, "policy_steps": state.policy_steps,
                    "version": None if self.block is None else self.block.header[_VERSION],
                }
            else:
                raise ValueError(f"unknown call {name!r}")
        except (TypeError, ValueError, RuntimeError) as e:
            return ("error", type(e).__name__, str(e))
        return ("ok", result)


def _serve(config, env_key, shm_path, owner_pid, authkey, control, keep_history) -> None:
    """Entry point of the server process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the owner's business; the watchdog covers it

    def on_term(*_):
        raise _Stop(_CLOSED, "terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, on_term)
    import torch

    torch.set_num_threads(1)  # small matrices; and no OpenMP pool in a forked child
    server = None
    try:
        server = _Server(config, env_key, shm_path, owner_pid, authkey, control, keep_history)
        server.run()
    except _Stop as stop:
        status, message = stop.args
    except BaseException as e:  # noqa: BLE001 - anything else is a failure the clients must hear about
        status = _FAILED
        message = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
        if server is None:
            try:
                control.send(("error", message))
            except OSError:
                pass
    if server is not None:
        server.shutdown(status, message)


# --- the handle -----------------------------------------------------------------------------------------
class ProcessGASILState:
    """Handle to a GASIL owner that lives in a server process: GASILState's interface for the wrappers.

    Build one with :meth:`start` (explicit, a context manager) or :meth:`shared` (what
    ``wrap_stack`` does for ``GASILConfig(backend="process")``). The handle is picklable; an unpickled
    or inherited copy is a client of the same server. ``close()`` on the owner's handle stops the
    server; on a copy in another process it only disconnects that process.

    Cadence: policy samples reach the server in chunks (and at every episode end), in arrival order;
    the server records them with :meth:`GASILState.record_samples`, which trains D whenever
    ``d_every`` samples (summed over all workers) have arrived since the last round, and publishes
    the new weights; each worker uses them from its next step. ``α(t)`` uses the server's sample count
    plus this worker's unshipped samples times the number of shipping workers (an estimate; exact
    with the default constant α).
    """

    is_gasil_owner = True  # what gasil_wrappers.find_state looks for

    def __init__(self, config: GASILConfig, env_key: str, address, authkey: bytes, shm_path: str,
                 server_pid: int, owner_pid: int):
        self.config = config
        self.env_key = env_key
        self._address, self._authkey, self._shm_path = address, authkey, shm_path
        self.server_pid, self._owner_pid = server_pid, owner_pid
        self._process = None  # owner side only
        self._control = None
        self._finalizer = None
        self._closed = False
        self._chunk = max(1, min(64, config.round_every // 16))
        self._spaces = None  # what attach() was given, to attach again in a forked child
        self._stopped: tuple[int, str] | None = None  # owner side: the server's last word
        self._reset_client()
        _handles.add(self)

    # --- creation --------------------------------------------------------------------------------
    @classmethod
    def start(cls, config: GASILConfig, env_key: str = "default", *, context: str | None = None,
              keep_history: bool = False, timeout: float = 60.0) -> ProcessGASILState:
        """Start a server process for ``config`` and return the owner's handle (usable with ``with``).

        It also becomes the owner :meth:`shared` finds for ``(config, env_key)`` in this process and in
        worker processes started from it after this call (so thunks may build the stack with
        ``wrap_stack(env, config)`` alone), unless a running owner already holds that key.

        ``context``: the multiprocessing start method for the server (default: the default one).
        ``keep_history``: the server keeps D's state after every round, for :meth:`published_discriminators`
        (for tests and audits; costs memory).
        """
        if fcntl is None:  # pragma: no cover
            raise GASILOwnerError("the process backend needs a POSIX system")
        if multiprocessing.current_process().daemon:
            raise GASILOwnerError(
                f"cannot start a GASIL owner server in the daemonic process "
                f"{multiprocessing.current_process().name!r} (pid {os.getpid()}): start it in the parent"
            )
        ctx = multiprocessing.get_context(context)
        authkey = os.urandom(32)
        shm_path = os.path.join(_shm_dir(), f"gasil-{os.getpid()}-{os.urandom(8).hex()}.shm")
        control, child_end = ctx.Pipe()
        process = ctx.Process(target=_serve, name=f"GASILOwner[{config.group}]", daemon=True,
                              args=(config, env_key, shm_path, os.getpid(), authkey, child_end, keep_history))
        process.start()
        child_end.close()
        try:
            if not control.poll(timeout):
                raise GASILOwnerError(f"the GASIL owner server did not start within {timeout} s")
            msg = control.recv()
        except (EOFError, OSError, GASILOwnerError) as e:
            _stop_server(process, control, shm_path)
            raise GASILOwnerError(f"the GASIL owner server failed to start ({e})") from None
        if msg[0] != "ready":
            _stop_server(process, control, shm_path)
            raise GASILOwnerError(f"the GASIL owner server failed to start: {msg[1]}")
        handle = cls(config, env_key, msg[1], authkey, shm_path, msg[2], os.getpid())
        handle._process, handle._control = process, control
        key, env_name, env_value = (config, env_key), None, None
        current = _owners.get(key)
        if current is None or not current._usable():
            _owners[key] = handle
            env_name = _env_name(config, env_key)
            env_value = base64.b64encode(pickle.dumps(handle._rebuild_args())).decode()
            os.environ[env_name] = env_value  # inherited by spawned workers: how they find the server
        # Close the server when this process exits, if close() was not called (before
        # multiprocessing terminates daemonic children, so the server cleans up after itself).
        handle._finalizer = multiprocessing.util.Finalize(
            handle, _stop_server, args=(process, control, shm_path, env_name, env_value), exitpriority=10)
        return handle

    @classmethod
    def shared(cls, config: GASILConfig, env_key: str) -> ProcessGASILState:
        """The owner handle for (config, env_key) reachable from this process, started on first use.

        In the process that started it: from a registry. In a forked worker: the inherited registry.
        In a spawned worker: an environment variable set by the owner. A worker process (one started
        by multiprocessing) never starts a server of its own: it raises :class:`GASILOwnerError`.
        """
        key = (config, env_key)
        handle = _owners.get(key)
        if handle is not None and handle._usable():
            return handle
        encoded = os.environ.get(_env_name(config, env_key))
        if encoded is not None and (handle is None or not handle._is_owner()):
            candidate = _rebuild(*pickle.loads(base64.b64decode(encoded)))
            if candidate._usable():
                _owners[key] = candidate
                return candidate
        if multiprocessing.parent_process() is not None:
            raise GASILOwnerError(
                f"backend='process': no GASIL owner server for group {config.group!r} is reachable from "
                f"worker process {multiprocessing.current_process().name!r} (pid {os.getpid()}). Build one "
                "env of the stack in the parent before the workers start (AsyncVectorEnv does, for its "
                "dummy env), or pass state=ProcessGASILState.start(config) into the env thunks"
            )
        return cls.start(config, env_key)

    def __enter__(self) -> ProcessGASILState:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- pickling: a client of the same server ---------------------------------------------------
    def _rebuild_args(self) -> tuple:
        return (self.config, self.env_key, self._address, self._authkey, self._shm_path, self.server_pid,
                self._owner_pid)

    def __reduce__(self):
        return _rebuild, self._rebuild_args()

    def __deepcopy__(self, memo):
        return self  # a shared service, like GASILState

    def __repr__(self) -> str:
        role = "owner" if self._is_owner() else "client"
        return f"ProcessGASILState({role}, group={self.config.group!r}, server pid {self.server_pid})"

    # --- client plumbing ---------------------------------------------------------------------------
    def _reset_client(self) -> None:
        """Forget this process's connection, mapping and unshipped samples (new process, or closed)."""
        self._conn = None
        self._block: _SharedBlock | None = None
        self._header = None
        self._snap: DiscriminatorSnapshot | None = None
        self._seq = -1
        self._version = 0  # publications seen (rounds and loads)
        self._ready = False
        self._weights_rounds = 0
        self._dims: tuple[int, int] | None = None  # attached in this process
        self._pending: np.ndarray | None = None
        self._n_pending = 0
        self._seed_sent: int | None = None
        self._bye = None

    def _is_owner(self) -> bool:
        return self._process is not None and os.getpid() == self._owner_pid

    def _usable(self) -> bool:
        if self._closed:
            return False
        if self._is_owner():
            return self._process.is_alive()
        if self._header is not None and self._header[_STATUS] != _RUNNING:
            return False
        try:
            os.kill(self.server_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def _server_alive(self) -> bool:
        if self._is_owner():
            return self._process.is_alive()
        try:
            os.kill(self.server_pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def _connection(self):
        if self._closed:
            raise GASILOwnerError("this GASIL owner handle is closed")
        if self._conn is None:
            try:
                self._conn = mpc.Client(self._address, family="AF_UNIX", authkey=self._authkey)
                self._conn.send(("hello", os.getpid(), multiprocessing.current_process().name))
            except (OSError, EOFError, mpc.AuthenticationError) as e:
                self._conn = None
                raise self._gone(e) from None
            # At a normal exit of this process (workers included), ship what is left and say bye, so
            # the server tells a clean exit from a crash.
            self._bye = multiprocessing.util.Finalize(self, self._disconnect, exitpriority=20)
        return self._conn

    def _gone(self, cause=None) -> GASILOwnerError:
        """The error for a server that cannot be reached: its own account if it left one."""
        message = self._failure()
        if message is None:
            message = (f"the GASIL owner server (pid {self.server_pid}, group {self.config.group!r}) "
                       f"is gone" + (f" ({type(cause).__name__}: {cause})" if cause else ""))
        return GASILOwnerError(message)

    def _failure(self) -> str | None:
        """Why the server stopped (from the shared block, or the owner's control pipe), or None."""
        if self._header is not None and self._header[_STATUS] != _RUNNING:
            status, text = self._header[_STATUS], self._block.error_text()
        elif self._is_owner() and self._owner_note() is not None:
            status, text = self._stopped
        else:
            return None
        what = "failed" if status == _FAILED else "was closed"
        return f"the GASIL owner server (pid {self.server_pid}, group {self.config.group!r}) {what}: {text}"

    def _owner_note(self) -> tuple[int, str] | None:
        if self._stopped is None and self._control is not None:
            try:
                while self._control.poll():
                    msg = self._control.recv()
                    if msg[0] == "stopped":
                        self._stopped = (msg[1], msg[2])
            except (EOFError, OSError):
                if self._stopped is None and not self._process.is_alive():
                    self._stopped = (_FAILED, f"exited with code {self._process.exitcode}")
        return self._stopped

    def _send(self, msg) -> None:
        try:
            self._connection().send(msg)
        except (OSError, EOFError) as e:
            raise self._gone(e) from None

    def _request(self, msg):
        conn = self._connection()
        try:
            conn.send(msg)
            while not conn.poll(0.5):
                if not self._server_alive():
                    raise EOFError("server process exited")
            reply = conn.recv()
        except (OSError, EOFError) as e:
            raise self._gone(e) from None
        if reply[0] == "error":
            kind = {"ValueError": ValueError, "TypeError": TypeError, "RuntimeError": RuntimeError}
            raise kind.get(reply[1], GASILOwnerError)(reply[2])
        return reply[1:]

    def _call(self, name: str, *args):
        self._flush()
        return self._request(("call", name, args))[0]

    def _flush(self) -> None:
        if self._n_pending:
            rows = self._pending[: self._n_pending].copy()
            self._n_pending = 0
            self._send(("samples", rows))

    def _disconnect(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            if self._header is None or self._header[_STATUS] == _RUNNING:
                self._flush()
                conn.send(("bye",))
        except (OSError, EOFError, GASILOwnerError):
            pass
        conn.close()
        if self._bye is not None:
            self._bye.cancel()
        if self._block is not None:
            self._header = None
            self._block.close()
        self._reset_client()

    def _refresh(self) -> None:
        """Something was published: take the new status, counters and (if changed) D's weights."""
        block = self._block
        with block.locked(False):
            self._seq = self._header[_SEQ]
            version = self._header[_VERSION]
            if version != self._version:
                self._weights_rounds = self._header[_ROUNDS]
                self._ready = self._weights_rounds > 0
                if self._ready:
                    self._snap.load(block.payload)
                self._version = version
        if self._header[_STATUS] != _RUNNING:
            raise GASILOwnerError(self._failure())

    # --- GASILState's interface ------------------------------------------------------------------
    def attach(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Called by each wrapper that uses this owner; fixes (and checks) the input dimensions."""
        dims = (_flat_dim(observation_space, "observation"), _flat_dim(action_space, "action"))
        if dims == self._dims:
            return
        self._spaces = (observation_space, action_space)
        shm_path, payload_size = self._request(("attach", *dims))
        if self._block is None:
            self._block = _SharedBlock(shm_path, payload_size)
            self._header = self._block.header
            self._snap = DiscriminatorSnapshot(sum(dims), self.config.d_hidden, self.config.d_input_clip)
            self._pending = np.empty((self._chunk, sum(dims)))
        self._dims = dims
        self._refresh()

    def seed_if_unset(self, seed: int | None) -> None:
        """Offer a reset seed; the server seeds D with the smallest one offered before its first round."""
        if seed is not None and (self._seed_sent is None or seed < self._seed_sent):
            self._seed_sent = int(seed)
            self._send(("seed", int(seed)))

    def add_episode(self, obs, actions, rewards) -> None:
        """Ship a finished episode to the server's buffer (after this process's unshipped samples).

        Returns None: whether the buffer keeps it is decided in the server.
        """
        self._flush()
        self._send(("episode", np.array(obs), np.array(actions), np.array(rewards, dtype=np.float64)))

    def shaped_reward(self, obs, action, env_reward: float) -> tuple[float, float, float]:
        """Queue (s, a) as a policy sample and return (shaped reward, −log D(s,a), α) with the latest D."""
        header = self._header
        if header is None:  # a wrapper built before a fork steps in the child: attach this process
            self.attach(*self._spaces)
            header = self._header
        if header[_SEQ] != self._seq:
            self._refresh()
        n = self._n_pending
        row = self._pending[n]
        od = self._dims[0]
        row[:od] = obs
        row[od:] = action
        if self._ready:
            d_reward = float(self._snap.reward(row))
            alpha = self.alpha_at(header[_STEPS] + n * max(1, header[_SHIPPERS]))
            shaped = shaped_reward(env_reward, d_reward, alpha, True, self.config.env_reward_weight)
        else:
            d_reward, alpha, shaped = 0.0, 0.0, env_reward
        self._n_pending = n + 1
        if n + 1 == self._chunk:
            self._flush()
        return shaped, d_reward, alpha

    alpha_at = GASILState.alpha_at

    @property
    def version(self) -> int:
        """Training rounds behind the D this process scores with now (0: untrained; the server's rounds)."""
        return self._weights_rounds

    @property
    def ready(self) -> bool:
        """Whether D has trained at least once (as last published)."""
        if self._header is not None:
            return self._header[_ROUNDS] > 0
        return self.server_info()["rounds"] > 0

    @property
    def rounds(self) -> int:
        return self._header[_ROUNDS] if self._header is not None else self.server_info()["rounds"]

    @property
    def policy_steps(self) -> int:
        """Policy samples the server has received (all workers; unshipped ones are not counted)."""
        return self._header[_STEPS] if self._header is not None else self.server_info()["policy_steps"]

    @property
    def buffer(self) -> GoodTrajectoryBuffer:
        """A copy of the server's good-trajectory buffer, as it is now."""
        buf = GoodTrajectoryBuffer(self.config.buffer_steps, self.config.gamma)
        buf.load_state_dict(self._call("buffer"))
        return buf

    def discriminator_reward(self, obs, action) -> np.ndarray:
        """−log D(s, a) for rows of observations and actions with the latest published D (no recording)."""
        if self._block is None:
            raise RuntimeError("ProcessGASILState: attach an env first")
        self._refresh()
        if not self._ready:
            raise RuntimeError("GASILState: the discriminator has not trained yet")
        return self._snap.reward(np.concatenate([obs, action], axis=1))

    def diagnostics(self) -> dict[str, float]:
        """The server's :meth:`GASILState.diagnostics` (after shipping this process's samples)."""
        return self._call("diagnostics")

    def state_dict(self) -> dict:
        """The server's :meth:`GASILState.state_dict` (without samples other workers have not shipped)."""
        return self._call("state_dict")

    def load_state_dict(self, state: dict) -> None:
        """Load into the server's GASILState and publish its D to every worker."""
        self._call("load_state_dict", state)

    def server_info(self) -> dict:
        """Server pid, connected clients, worker pids, rounds, policy steps, published version."""
        return self._call("info")

    def published_discriminators(self) -> dict[int, dict]:
        """Rounds → D's state_dict as published after that round (needs ``start(..., keep_history=True)``)."""
        return self._call("history")

    @property
    def error(self) -> str | None:
        """Why the server stopped, if it did (None while it runs)."""
        return self._failure()

    def check(self) -> None:
        """Raise :class:`GASILOwnerError` if the server has stopped."""
        message = self._failure()
        if message is not None:
            raise GASILOwnerError(message)
        if not self._server_alive():
            raise self._gone()

    def close(self) -> None:
        """Owner: stop the server (and wait for it). Elsewhere: ship what is left and disconnect."""
        if self._closed:
            return
        owner = self._is_owner()
        self._disconnect()
        if owner:
            if self._process.is_alive():
                try:
                    self._control.send(("close",))
                except OSError:
                    pass
                self._process.join(5)
            self._owner_note()  # keep the server's last word for .error
            self._finalizer()  # _stop_server, once: join (terminate, kill), unlink, forget the env var
            key = (self.config, self.env_key)
            if _owners.get(key) is self:
                del _owners[key]
        self._closed = True


def _rebuild(config, env_key, address, authkey, shm_path, server_pid, owner_pid) -> ProcessGASILState:
    return ProcessGASILState(config, env_key, address, authkey, shm_path, server_pid, owner_pid)


def _env_name(config: GASILConfig, env_key: str) -> str:
    return _ENV_PREFIX + hashlib.sha1(repr((config, env_key)).encode()).hexdigest()[:16]


def _stop_server(process, control, shm_path: str, env_name: str | None = None, env_value: str | None = None
                 ) -> None:
    """Ask the server to close, wait for it (then terminate, then kill), remove what it leaves behind."""
    if env_name is not None and os.environ.get(env_name) == env_value:
        del os.environ[env_name]
    if process.is_alive():
        try:
            control.send(("close",))
        except OSError:
            pass
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(2)
        if process.is_alive():
            process.kill()
            process.join()
    else:
        process.join()
    control.close()
    try:
        os.unlink(shm_path)
    except FileNotFoundError:
        pass


def _after_fork_in_child() -> None:
    for handle in list(_handles):
        handle._reset_client()


os.register_at_fork(after_in_child=_after_fork_in_child)
