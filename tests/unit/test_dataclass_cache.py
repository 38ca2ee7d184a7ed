"""The bytecode cache of the methods dataclasses generates for skinnysip's classes
(``skinnysip._dataclass_cache``; issue 12's start-up): the classes behave exactly as without
it, a second process compiles nothing, and a damaged or foreign cache file is ignored."""

from __future__ import annotations

import dataclasses
import inspect
import json
import marshal
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from skinnysip import _dataclass_cache as cache_module

#: every kind of generated method: frozen (__setattr__/__delattr__/__hash__), kw_only,
#: defaults and factories, InitVar and __post_init__, ClassVar, order, slots, eq=False
CLASSES = '''
import dataclasses
from dataclasses import InitVar, dataclass, field
from typing import ClassVar

@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()

@dataclass(kw_only=True)
class Result:
    success: bool
    notes: list[str] = field(default_factory=list)
    code: int | None = None
    kind: ClassVar[str] = "result"

@dataclass(order=True)
class Version:
    major: int
    minor: int = 0
    label: str = field(default="", compare=False)

@dataclass
class Derived:
    seed: InitVar[int]
    value: int = field(init=False)
    def __post_init__(self, seed: int) -> None:
        self.value = seed * 2

@dataclass(slots=True)
class Slotted:
    a: int
    b: str = "b"

@dataclass(eq=False, repr=False)
class Plain:
    a: int
'''


def _define(name: str, tmp_path: Path, prelude: str = "") -> dict[str, Any]:
    """Run ``prelude`` + :data:`CLASSES` as the module ``name`` (a file in ``tmp_path``); its
    namespace."""
    module_file = tmp_path / f"{name.rsplit('.', 1)[-1]}.py"
    module_file.write_text(prelude + CLASSES)
    namespace: dict[str, Any] = {"__name__": name, "__file__": str(module_file)}
    sys.modules[name] = type(sys)(name)  # dataclasses looks the module up for its globals
    sys.modules[name].__dict__.update(namespace)
    try:
        exec(compile(prelude + CLASSES, str(module_file), "exec", dont_inherit=True), sys.modules[name].__dict__)
        return sys.modules[name].__dict__
    finally:
        del sys.modules[name]


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> cache_module._Cache:
    """A fresh cache in place of the process's one, written even under PYTHONDONTWRITEBYTECODE."""
    fresh = cache_module._Cache()
    monkeypatch.setattr(cache_module, "_cache", fresh)
    monkeypatch.setattr(dataclasses, "exec", cache_module._exec, raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    return fresh


def _behaviour(ns: dict[str, Any]) -> dict[str, Any]:
    """What a user of the classes can see of their generated methods."""
    point, result, version, derived, slotted, plain = (
        ns[n] for n in ("Point", "Result", "Version", "Derived", "Slotted", "Plain"))
    p = point(1, 2, ("a",))
    frozen = None
    try:
        p.x = 3
    except dataclasses.FrozenInstanceError as exc:
        frozen = type(exc).__name__
    try:
        del p.y
    except dataclasses.FrozenInstanceError as exc:
        frozen = (frozen, type(exc).__name__)
    r = result(success=True)
    with pytest.raises(TypeError):
        result(True)  # keyword only
    return {
        "signatures": [str(inspect.signature(c)) for c in (point, result, version, derived, slotted, plain)],
        "init_annotations": [sorted(map(str, c.__init__.__annotations__.items())) for c in (point, result, version)],
        "repr": [repr(p), repr(r), repr(version(1, 2, "x")), repr(derived(4)), repr(slotted(1))],
        "eq": [p == point(1, 2, ("a",)), p == point(1, 3), r == result(success=True), plain(1) == plain(1)],
        "hash": [hash(p) == hash(point(1, 2, ("a",))), result.__hash__ is None],
        "order": [version(1, 2) < version(1, 3), version(2) > version(1, 9, "z"), version(1, 2, "a") == version(1, 2, "b")],
        "frozen": frozen,
        "factories": [result(success=False).notes is not r.notes, derived(5).value],
        "slots": [slotted.__slots__, hasattr(slotted(1), "__dict__")],
        "fields": [[f.name for f in dataclasses.fields(c)] for c in (point, result, version, derived, slotted)],
        "replace": repr(dataclasses.replace(p, y=9)),
    }


@pytest.mark.parametrize("prelude", ["", "from __future__ import annotations\n"])
def test_classes_behave_exactly_as_without_the_cache(cache: cache_module._Cache, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, prelude: str) -> None:
    plain = _define("elsewhere.models", tmp_path, prelude)  # not this package's: the builtin exec
    assert cache.tables == {}
    ours = _define("skinnysip.models_for_test", tmp_path, prelude)
    assert list(cache.tables) == [str(tmp_path / "models_for_test.py")]
    assert len(cache.tables[str(tmp_path / "models_for_test.py")]) >= 15  # every generated method
    monkeypatch.delattr(dataclasses, "exec")  # the standard library alone, as control
    control = _define("control.models", tmp_path, prelude)
    assert _behaviour(ours) == _behaviour(plain) == _behaviour(control)
    # the generated code is what exec would have made: same file name, no __future__ flags
    for name in ("Point", "Result", "Version"):
        made = [ns[name].__init__.__code__ for ns in (ours, plain, control)]
        assert {(c.co_filename, c.co_flags, c.co_code) for c in made} == {
            ("<string>", control[name].__init__.__code__.co_flags, control[name].__init__.__code__.co_code)}


def test_a_later_process_compiles_nothing_and_behaves_the_same(cache: cache_module._Cache, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first = _define("skinnysip.models_for_test", tmp_path)
    cache.save()
    written = cache_module.cache_path(str(tmp_path / "models_for_test.py"))
    assert written is not None and Path(written).parent == tmp_path / "__pycache__"
    assert Path(written).read_bytes().startswith(cache_module.HEADER)
    later = cache_module._Cache()  # as a new process: everything from the file
    monkeypatch.setattr(cache_module, "_cache", later)
    again = _define("skinnysip.models_for_test", tmp_path)
    assert later.dirty == set() and len(later.used[str(tmp_path / "models_for_test.py")]) >= 15
    assert _behaviour(again) == _behaviour(first)


@pytest.mark.parametrize("damage", ["empty", "foreign", "other-python", "truncated", "not-a-map", "wrong-types",
                                    "too-large"])
def test_a_damaged_or_foreign_file_is_ignored_and_rewritten(cache: cache_module._Cache, tmp_path: Path,
                                                           damage: str) -> None:
    path = Path(str(cache_module.cache_path(str(tmp_path / "models_for_test.py"))))
    path.parent.mkdir(parents=True)
    good = cache_module.HEADER + marshal.dumps({"x": compile("x = 1", "<string>", "exec")})
    path.write_bytes({
        "empty": b"",
        "foreign": b"\x00" * 64,
        "other-python": b"skinnysip-dataclass-code\n\x00\x00\r\n" + good[len(cache_module.HEADER):],
        "truncated": good[:-5],
        "not-a-map": cache_module.HEADER + marshal.dumps([1, 2, 3]),
        "wrong-types": cache_module.HEADER + marshal.dumps({1: "not code", "y": 2}),
        "too-large": good + b"\x00" * cache_module.MAX_BYTES,
    }[damage])
    ns = _define("skinnysip.models_for_test", tmp_path)
    assert ns["Point"](1) == ns["Point"](1, 0)
    assert cache.dirty == {str(tmp_path / "models_for_test.py")}  # compiled, as with no file
    cache.save()
    assert len(cache_module.load(str(path))) >= 15


def test_nothing_is_written_under_dont_write_bytecode(cache: cache_module._Cache, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _define("skinnysip.models_for_test", tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    cache.save()
    assert not (tmp_path / "__pycache__").exists()


def test_an_unwritable_directory_costs_only_the_gain(cache: cache_module._Cache, tmp_path: Path) -> None:
    (tmp_path / "__pycache__").write_text("a file where the directory would be")
    ns = _define("skinnysip.models_for_test", tmp_path)
    cache.save()  # no exception
    assert ns["Version"](1) < ns["Version"](2)
    assert not cache_module.save(str(tmp_path / "__pycache__" / "x.bin"), {})


def test_a_module_map_that_grew_keeps_only_what_ran(cache: cache_module._Cache, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "MAX_ENTRIES", 5)
    _define("skinnysip.models_for_test", tmp_path)
    module_file = str(tmp_path / "models_for_test.py")
    cache.tables[module_file]["stale source"] = compile("pass", "<string>", "exec")
    cache.save()
    kept = cache_module.load(str(cache_module.cache_path(module_file)))
    assert "stale source" not in kept and set(kept) == cache.used[module_file]


#: counts the compiles of generated dataclass methods (the stdlib's namedtuples compile too)
_COUNT_COMPILES = """
import sys
compiled = []
def hook(event, args):
    if event == "compile" and sys._getframe(1).f_globals.get("__name__") in ("dataclasses", "skinnysip._dataclass_cache"):
        compiled.append(args[1])
sys.addaudithook(hook)
import skinnysip.probes.sip
print(len(compiled))
"""


def test_the_second_start_of_the_sip_probes_compiles_no_generated_method(tmp_path: Path) -> None:
    """Two fresh interpreters import the SIP probes (about fifty dataclasses) with their
    bytecode in ``tmp_path``: the first compiles the generated methods and writes them, the
    second compiles none; with the cache turned off every start compiles them."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "SKINNYSIP_NO_DATACLASS_CACHE")}
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path)

    def compiles(**extra: str) -> int:
        done = subprocess.run([sys.executable, "-c", _COUNT_COMPILES], capture_output=True, text=True, timeout=60,
                              env={**env, **extra})
        assert done.returncode == 0, done.stderr
        return int(json.loads(done.stdout.strip().splitlines()[-1]))

    first = compiles()
    assert first >= 150, first  # ~50 classes, 3-6 methods each
    assert list(tmp_path.rglob("*.dataclasses.bin"))
    assert compiles() == 0
    # without it, every start compiles them all (a few more: the cache compiles a text that
    # two classes of one module share once)
    assert compiles(SKINNYSIP_NO_DATACLASS_CACHE="1") >= first
