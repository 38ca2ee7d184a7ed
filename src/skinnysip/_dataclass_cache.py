"""A bytecode cache for the methods :mod:`dataclasses` writes for skinnysip's own classes.

Why: on Python 3.11 ``@dataclass`` builds ``__init__``, ``__repr__``, ``__eq__``,
``__hash__`` and a frozen class's ``__setattr__``/``__delattr__`` by compiling generated
source with :func:`exec`, one compile per method. Compiling is most of a class's creation
(~0.3-1 ms each here), and ``skinnysip sip options`` creates about fifty classes at start-up
(issue 12's start-up goal; ``benchmarks/bench_sip_probe.py`` measures it).

How: :func:`install` gives the :mod:`dataclasses` module a module-level ``exec`` (a global
name shadows the builtin there; no function of the module is replaced). For source text
whose globals are a ``skinnysip`` module's, it runs a code object compiled once and kept in a
file beside that module's ``.pyc``; everything else goes to the builtin unchanged. The
key is the whole generated source, so a changed class compiles anew and the code that runs is
byte for byte what :func:`exec` would compile (same filename ``<string>``, no inherited
``__future__`` flags).

The file follows the rules of ``.pyc`` files (:func:`importlib.util.cache_from_source`):
``__pycache__`` or ``sys.pycache_prefix``, not written under ``PYTHONDONTWRITEBYTECODE``
(``sys.dont_write_bytecode``), tagged with the interpreter's magic number (another Python
ignores it), written atomically at exit when this process compiled something new, and
ignored when unreadable, truncated, too large (:data:`MAX_BYTES`) or not ours. A directory
that cannot be written costs nothing but the gain.
"""

# No ``from __future__`` import here: exec of a string inherits the future flags of the frame
# calling it, and for code that is not ours that frame is _exec's (dataclasses.py has none).

import atexit
import builtins
import dataclasses
import importlib.util
import marshal
import os
import sys
from types import CodeType
from typing import Any

#: the cache file's first bytes: this format's name, then the interpreter's bytecode magic
HEADER = b"skinnysip-dataclass-code\n" + importlib.util.MAGIC_NUMBER
#: a larger file is not read (a module's classes take a few tens of KiB)
MAX_BYTES = 4 << 20
#: a module's map holding more entries is written with only those this process ran (a
#: module's classes need a few dozen; the rest are of classes since changed)
MAX_ENTRIES = 512
#: the modules whose generated methods are cached: this package's
PACKAGE = "skinnysip."


class _Cache:
    """The source → code maps of this package's modules, each read from its file on the
    first class of that module, and which of them this process added to."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, CodeType]] = {}  # module file → its map
        self.used: dict[str, set[str]] = {}  # module file → the sources this process ran
        self.dirty: set[str] = set()

    def code_for(self, source: str, module_file: str) -> CodeType:
        table = self.tables.get(module_file)
        if table is None:
            path = cache_path(module_file)
            table = self.tables[module_file] = load(path) if path is not None else {}
        code = table.get(source)
        if code is None:
            # dont_inherit: the flags of this module must not reach the generated code (exec
            # of a string inherits those of dataclasses.py, which has no __future__ imports)
            code = table[source] = compile(source, "<string>", "exec", dont_inherit=True)
            self.dirty.add(module_file)
        self.used.setdefault(module_file, set()).add(source)
        return code

    def save(self) -> None:
        """Write the maps this process added to (each atomically; errors ignored)."""
        if sys.dont_write_bytecode:
            return
        for module_file in sorted(self.dirty):
            path = cache_path(module_file)
            table = self.tables[module_file]
            if len(table) > MAX_ENTRIES:  # old classes' methods pile up: keep this run's
                table = {source: table[source] for source in self.used[module_file]}
            if path is not None:
                save(path, table)
        self.dirty.clear()


def cache_path(module_file: str) -> str | None:
    """Where the cache of the module in ``module_file`` lives: beside its ``.pyc``
    (``…/sip/__pycache__/transaction.cpython-311.dataclasses.bin``); None when Python keeps
    no bytecode cache (``sys.implementation.cache_tag`` None) or the file is not a ``.py``."""
    if not module_file.endswith(".py"):
        return None
    try:
        pyc = importlib.util.cache_from_source(module_file)
    except (NotImplementedError, ValueError):
        return None
    return os.path.splitext(pyc)[0] + ".dataclasses.bin"


def load(path: str) -> dict[str, CodeType]:
    """The source → code map in ``path``; empty when it is missing, unreadable, larger than
    :data:`MAX_BYTES`, of another interpreter or damaged."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES or not data.startswith(HEADER):
            return {}
        table = marshal.loads(data[len(HEADER):])
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    if not isinstance(table, dict):
        return {}
    return {s: c for s, c in table.items() if isinstance(s, str) and isinstance(c, CodeType)}


def save(path: str, table: dict[str, CodeType]) -> bool:
    """Write ``table`` to ``path`` through a temporary file and a rename (a reader never sees
    half a file; concurrent writers: the last one wins). False when it could not be written."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as f:
            f.write(HEADER + marshal.dumps(table))
        os.replace(temporary, path)
    except (OSError, ValueError):
        try:
            os.unlink(temporary)
        except OSError:
            pass
        return False
    return True


_cache: _Cache | None = None


def _exec(source: Any, namespace: Any = None, local_namespace: Any = None, /, **options: Any) -> None:
    """:func:`exec` as :mod:`dataclasses` calls it: cached for generated methods of this
    package's classes, the builtin for anything else."""
    if namespace is None:  # the builtin's own default: the caller's namespaces
        frame = sys._getframe(1)
        namespace = frame.f_globals
        local_namespace = frame.f_locals if local_namespace is None else local_namespace
    cache = _cache
    if cache is not None and isinstance(source, str) and isinstance(namespace, dict):
        name, module_file = namespace.get("__name__"), namespace.get("__file__")
        if isinstance(name, str) and name.startswith(PACKAGE) and isinstance(module_file, str):
            source = cache.code_for(source, module_file)
    builtins.exec(source, namespace, local_namespace, **options)


def install() -> None:
    """Cache the generated methods of every dataclass of this package created from now on
    (idempotent). Does nothing when ``SKINNYSIP_NO_DATACLASS_CACHE`` is set."""
    global _cache
    if _cache is not None or os.environ.get("SKINNYSIP_NO_DATACLASS_CACHE"):
        return
    _cache = _Cache()
    dataclasses.exec = _exec  # type: ignore[attr-defined]
    atexit.register(_cache.save)
