"""A pickle interpreter that builds only inert records, so unpickling runs nothing from the file.

`pickle.Unpickler` imports what the file names and calls it (REDUCE), constructs classes
(NEWOBJ, OBJ, INST) and runs their `__setstate__` (BUILD). This interpreter reads the same
opcodes with `pickletools.genops` (the standard library's decoder, which only parses) and gives
each a meaning of its own: a global becomes a `GlobalRef` label from the allow-list, a call of
a label builds a record (`inert.py`), BUILD stores the state in the record's plain dict. The
only code that runs is this module's. Every operation, every byte of pickle and every level
of tuple nesting counts against `Limits`.
"""

from __future__ import annotations

import pickletools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .inert import (
    GlobalRef,
    ModuleRecord,
    OpaqueRecord,
    StorageRef,
    TensorRef,
    describe,
    resolve_global,
)
from .limits import Limits, human_bytes
from .refusal import Refused, Unreadable, clip

PersistentLoad = Callable[[Any], Any]

HIGHEST_PROTOCOL = 5
# Types that may be dict keys or set members: hashing them runs no code from the file, and
# tuples and frozensets are depth-limited when built, so hashing cannot recurse without end.
_KEY_TYPES = (str, int, float, bytes, tuple, frozenset, type(None), GlobalRef)


class Budget:
    """Pickle operations left for one file (a legacy file holds several pickles)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.operations = 0

    def spend(self, count: int) -> None:
        self.operations += count
        if self.operations > self.limits.pickle_operations:
            raise Refused(
                f"its pickle runs more than {self.limits.pickle_operations:,} operations "
                "(PCB needs about 29,000); refused as too large to be a PCB checkpoint"
            )


class _Reader:
    """The file-like `genops` reads from, over `data[start:]`, refusing to read past the end
    or past the pickle size limit (so a declared length never allocates memory first)."""

    def __init__(self, data: Any, start: int, limit: int) -> None:
        self.data = data  # bytes or mmap: slicing either gives bytes
        self.pos = start
        self.start = start
        self.end = len(data)
        self.limit = limit
        self.bound = min(self.end, start + limit)

    def _check(self, stop: int) -> None:
        if stop > self.start + self.limit and self.end > self.start + self.limit:
            raise Refused(
                f"its pickle is larger than {human_bytes(self.limit)} (PCB's is under 1 MiB); "
                "refused as too large to be a PCB checkpoint"
            )
        if stop > self.end:
            raise Unreadable(f"the pickle is cut short at byte {self.end}")

    def read(self, count: int) -> bytes:
        stop = self.pos + count
        if stop > self.bound:
            self._check(stop)
        chunk = self.data[self.pos : stop]
        self.pos = stop
        return chunk

    def readline(self) -> bytes:
        stop = self.data.find(b"\n", self.pos, min(self.end, self.start + self.limit + 1))
        self._check(self.end + 1 if stop < 0 else stop + 1)
        return self.read(stop + 1 - self.pos)

    def tell(self) -> int:
        return self.pos


def unpickle(
    data: Any,
    start: int,
    budget: Budget,
    persistent_load: PersistentLoad | None = None,
) -> tuple[Any, int]:
    """The value of the pickle at `data[start:]` and the offset just after its STOP."""
    machine = _Machine(budget, persistent_load)
    reader = _Reader(data, start, budget.limits.pickle_bytes)
    return machine.run(reader), reader.tell()


class _Machine:
    def __init__(self, budget: Budget, persistent_load: PersistentLoad | None) -> None:
        self.budget = budget
        self.depth_limit = budget.limits.depth
        self.persistent_load = persistent_load
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        # id -> (tuple or frozenset, its nesting depth); holding the object keeps its id unique.
        self.depths: dict[int, tuple[Any, int]] = {}

    def run(self, reader: _Reader) -> Any:
        handlers = _HANDLERS
        budget, spent, batch = self.budget, 0, 1000
        try:
            for opcode, arg, position in pickletools.genops(reader):
                spent += 1
                if spent == batch:  # counted in batches: this loop is the loader's hot path
                    budget.spend(spent)
                    spent = 0
                handler = handlers.get(opcode.name)
                if handler is None:
                    raise Refused(
                        f"its pickle uses opcode {opcode.name} (byte {position}), which "
                        "torch.save never writes"
                    )
                try:
                    result = handler(self, arg)
                except (IndexError, KeyError, TypeError, AttributeError) as error:
                    raise Unreadable(
                        f"malformed pickle at byte {position} ({opcode.name}: "
                        f"{type(error).__name__})"
                    ) from None
                if opcode.name == "STOP":
                    budget.spend(spent)
                    return result
        except (ValueError, OverflowError) as error:
            # genops' own complaints (unknown opcode, bad text number); they may quote the file.
            raise Unreadable(f"malformed pickle ({clip(str(error), 80)})") from None
        raise Unreadable("the pickle has no STOP")

    # --- the stack -----------------------------------------------------------------------

    def push(self, value: Any) -> None:
        self.stack.append(value)

    def pop(self) -> Any:
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        items = self.stack
        self.stack = self.marks.pop()
        return items

    def key(self, value: Any) -> Any:
        if not isinstance(value, _KEY_TYPES):
            raise Unreadable(f"a dict key or set member that is a {describe(value)}")
        return value

    def nested(self, make: type, items: list[Any]) -> Any:
        """A tuple or frozenset of `items`, refused past the depth limit."""
        depth = 1
        for item in items:
            if type(item) in (tuple, frozenset):
                depth = max(depth, 1 + self.depths.get(id(item), (None, 1))[1])
        if depth > self.depth_limit:
            raise Refused(
                f"its pickle nests tuples deeper than {self.depth_limit} levels (PCB's nest 2)"
            )
        value = tuple(items) if make is tuple else frozenset(self.key(i) for i in items)
        self.depths[id(value)] = (value, depth)
        return value

    def pairs(self, items: list[Any]) -> list[tuple[Any, Any]]:
        if len(items) % 2:
            raise Unreadable("a dict with a key and no value")
        return [(self.key(items[i]), items[i + 1]) for i in range(0, len(items), 2)]

    # --- constants -------------------------------------------------------------------------

    def op_PROTO(self, arg: int) -> None:
        if not 0 <= arg <= HIGHEST_PROTOCOL:
            raise Unreadable(f"pickle protocol {arg}")

    def op_FRAME(self, arg: int) -> None:
        pass

    def op_INT(self, arg: Any) -> None:
        self.push(arg)

    op_BININT = op_BININT1 = op_BININT2 = op_LONG = op_LONG1 = op_LONG4 = op_INT
    op_FLOAT = op_BINFLOAT = op_INT
    op_UNICODE = op_SHORT_BINUNICODE = op_BINUNICODE = op_BINUNICODE8 = op_INT

    def op_BINBYTES(self, arg: bytes) -> None:
        self.push(bytes(arg))

    op_SHORT_BINBYTES = op_BINBYTES8 = op_BYTEARRAY8 = op_BINBYTES

    def op_STRING(self, arg: str) -> None:
        # Python 2's str; torch.load decodes it as UTF-8, and so does this.
        try:
            self.push(arg.encode("latin-1").decode("utf-8"))
        except UnicodeError:
            raise Unreadable("a Python 2 string that is not UTF-8") from None

    op_BINSTRING = op_SHORT_BINSTRING = op_STRING

    def op_NONE(self, arg: None) -> None:
        self.push(None)

    def op_NEWTRUE(self, arg: None) -> None:
        self.push(True)

    def op_NEWFALSE(self, arg: None) -> None:
        self.push(False)

    # --- containers ------------------------------------------------------------------------

    def op_EMPTY_LIST(self, arg: None) -> None:
        self.push([])

    def op_EMPTY_TUPLE(self, arg: None) -> None:
        self.push(())

    def op_EMPTY_DICT(self, arg: None) -> None:
        self.push({})

    def op_EMPTY_SET(self, arg: None) -> None:
        self.push(set())

    def op_MARK(self, arg: None) -> None:
        self.marks.append(self.stack)
        self.stack = []

    def op_POP_MARK(self, arg: None) -> None:
        self.pop_mark()

    def op_POP(self, arg: None) -> None:
        if self.stack:
            self.pop()
        else:
            self.pop_mark()

    def op_DUP(self, arg: None) -> None:
        self.push(self.stack[-1])

    def op_LIST(self, arg: None) -> None:
        self.push(self.pop_mark())

    def op_TUPLE(self, arg: None) -> None:
        self.push(self.nested(tuple, self.pop_mark()))

    def op_TUPLE1(self, arg: None) -> None:
        self.push(self.nested(tuple, [self.pop()]))

    def op_TUPLE2(self, arg: None) -> None:
        second = self.pop()
        self.push(self.nested(tuple, [self.pop(), second]))

    def op_TUPLE3(self, arg: None) -> None:
        third, second = self.pop(), self.pop()
        self.push(self.nested(tuple, [self.pop(), second, third]))

    def op_DICT(self, arg: None) -> None:
        self.push(dict(self.pairs(self.pop_mark())))

    def op_FROZENSET(self, arg: None) -> None:
        self.push(self.nested(frozenset, self.pop_mark()))

    def target(self, kind: type) -> Any:
        target = self.stack[-1]
        if not isinstance(target, kind):
            raise Unreadable(f"adds items to a {describe(target)}")
        return target

    def op_APPEND(self, arg: None) -> None:
        value = self.pop()
        self.target(list).append(value)

    def op_APPENDS(self, arg: None) -> None:
        items = self.pop_mark()
        self.target(list).extend(items)

    def op_SETITEM(self, arg: None) -> None:
        value, key = self.pop(), self.pop()
        self.target(dict)[self.key(key)] = value

    def op_SETITEMS(self, arg: None) -> None:
        pairs = self.pairs(self.pop_mark())
        self.target(dict).update(pairs)

    def op_ADDITEMS(self, arg: None) -> None:
        items = self.pop_mark()
        self.target(set).update(self.key(item) for item in items)

    # --- the memo --------------------------------------------------------------------------

    def op_GET(self, arg: int) -> None:
        if arg not in self.memo:
            raise Unreadable(f"the pickle reads memo entry {arg}, which was never written")
        self.push(self.memo[arg])

    op_BINGET = op_LONG_BINGET = op_GET

    def op_PUT(self, arg: int) -> None:
        if arg < 0:
            raise Unreadable("a negative memo index")
        self.memo[arg] = self.stack[-1]

    op_BINPUT = op_LONG_BINPUT = op_PUT

    def op_MEMOIZE(self, arg: None) -> None:
        self.memo[len(self.memo)] = self.stack[-1]

    # --- names, calls and objects ------------------------------------------------------------

    def op_GLOBAL(self, arg: str) -> None:
        module, _, name = arg.partition(" ")
        self.push(resolve_global(module, name))

    def op_STACK_GLOBAL(self, arg: None) -> None:
        name = self.pop()
        self.push(resolve_global(self.pop(), name))

    def op_EXT1(self, arg: int) -> None:
        # torch.save never writes extension codes; resolving one would consult the copyreg
        # registry of this process, which the file does not control and need not be trusted.
        raise Refused(
            f"its pickle uses extension code {arg} (the copyreg registry), which torch.save "
            "never writes"
        )

    op_EXT2 = op_EXT4 = op_EXT1

    def op_REDUCE(self, arg: None) -> None:
        args = self.pop()
        self.push(self.call(self.pop(), args))

    def op_NEWOBJ(self, arg: None) -> None:
        args = self.pop()
        self.push(self.instantiate(self.pop(), args))

    def op_NEWOBJ_EX(self, arg: None) -> None:
        kwargs, args = self.pop(), self.pop()
        self.push(self.instantiate(self.pop(), args, kwargs))

    def op_OBJ(self, arg: None) -> None:
        items = self.pop_mark()
        self.push(self.instantiate(items[0], tuple(items[1:])))

    def op_INST(self, arg: str) -> None:
        module, _, name = arg.partition(" ")
        cls = resolve_global(module, name)
        self.push(self.instantiate(cls, tuple(self.pop_mark())))

    def op_BUILD(self, arg: None) -> None:
        state = self.pop()
        build(self.stack[-1], state)

    def op_PERSID(self, arg: str) -> None:
        raise Refused("its pickle uses a text persistent id (PERSID); torch.save never writes one")

    def op_BINPERSID(self, arg: None) -> None:
        if self.persistent_load is None:
            raise Unreadable("a persistent id where torch.save writes none")
        self.push(self.persistent_load(self.pop()))

    def op_STOP(self, arg: None) -> Any:
        return self.pop()

    def call(self, function: Any, args: Any) -> Any:
        if not isinstance(function, GlobalRef):
            raise Unreadable(f"calls a {describe(function)}")
        if not isinstance(args, tuple):
            raise Unreadable(f"calls {function.qualname} with a {describe(args)} of arguments")
        return call(function, args, self.budget.limits, self.key)

    def instantiate(self, cls: Any, args: Any, kwargs: Any = None) -> Any:
        if not isinstance(cls, GlobalRef):
            raise Unreadable(f"instantiates a {describe(cls)}")
        if args != () or kwargs:
            raise Refused(
                f"calls the constructor of {cls.qualname} with arguments, which torch.save "
                "never writes (a module is restored from its saved state, never constructed)"
            )
        if cls.kind == "module":
            return ModuleRecord(cls.qualname)
        if cls.kind == "ordered-dict":
            return OrderedDict()
        raise Refused(f"instantiates {cls.qualname}, which torch.save never writes")


# Opcode name -> the _Machine method that runs it (op_<NAME>); a name missing here is refused.
_HANDLERS = {
    name[len("op_") :]: method for name, method in vars(_Machine).items() if name.startswith("op_")
}


def _arity(function: GlobalRef, args: tuple[Any, ...], *counts: int) -> None:
    if len(args) not in counts:
        raise Unreadable(f"calls {function.qualname} with {len(args)} arguments")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, limits: Limits) -> TensorRef:
    """A tensor reference, checked to lie inside its storage and to be of bounded size."""
    if not isinstance(storage, StorageRef):
        raise Unreadable(f"a tensor whose storage is a {describe(storage)}")
    if not (isinstance(size, tuple) and isinstance(stride, tuple)) or len(size) != len(stride):
        raise Unreadable("a tensor whose size and stride are not tuples of one length")
    if not all(_is_int(v) and v >= 0 for v in (offset, *size, *stride)):
        raise Unreadable("a tensor with a negative or non-integer size, stride or offset")
    tensor = TensorRef(storage, offset, size, stride)
    if tensor.numel * storage.dtype.itemsize > limits.storage_bytes:
        raise Refused(
            f"declares a tensor of {tensor.numel:,} elements, over the loader's limit of "
            f"{human_bytes(limits.storage_bytes)}"
        )
    if tensor.numel:
        last = offset + sum((extent - 1) * step for extent, step in zip(size, stride))
        if last >= storage.numel:
            raise Unreadable(
                f"a tensor reaches element {last:,} of a storage of {storage.numel:,} elements"
            )
    return tensor


def call(
    function: GlobalRef, args: tuple[Any, ...], limits: Limits, key: Callable[[Any], Any]
) -> Any:
    """What a call of an allow-listed name yields here: a plain value or a record."""
    kind = function.kind
    if kind == "ordered-dict":
        _arity(function, args, 0, 1)
        if not args:
            return OrderedDict()
        if not isinstance(args[0], (list, tuple)):
            raise Unreadable("an OrderedDict made from something other than a list of pairs")
        pairs = []
        for pair in args[0]:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise Unreadable("an OrderedDict made from something other than pairs")
            pairs.append((key(pair[0]), pair[1]))
        return OrderedDict(pairs)
    if kind in ("set", "frozenset"):
        _arity(function, args, 0, 1)
        items = args[0] if args else ()
        if not isinstance(items, (list, tuple, set, frozenset)):
            raise Unreadable(f"a set made from a {describe(items)}")
        made = {key(item) for item in items}
        return made if kind == "set" else frozenset(made)
    if kind == "reconstructor":
        # copyreg._reconstructor(cls, object, None): protocols 0 and 1 create an instance so.
        _arity(function, args, 3)
        cls, base, state = args
        if not (isinstance(cls, GlobalRef) and cls.kind == "module"):
            raise Unreadable(f"copyreg._reconstructor of a {describe(cls)}")
        if not (isinstance(base, GlobalRef) and base.kind == "object") or state is not None:
            raise Refused(f"copyreg._reconstructor of {cls.qualname} on another base class")
        return ModuleRecord(cls.qualname)
    if kind == "encode":
        _arity(function, args, 2)
        text, encoding = args
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise Refused("calls _codecs.encode other than as protocol 2 writes bytes")
        return text.encode("latin-1")
    if kind == "tensor-v2":
        _arity(function, args, 6, 7)
        return _tensor(*args[:4], limits)
    if kind == "tensor":
        _arity(function, args, 4)
        return _tensor(*args, limits)
    if kind in ("parameter", "parameter-with-state", "parameter-class"):
        counts = {"parameter": (3,), "parameter-with-state": (4,), "parameter-class": (1, 2)}
        _arity(function, args, *counts[kind])
        if not isinstance(args[0], TensorRef):
            raise Unreadable(f"a Parameter holding a {describe(args[0])}")
        return args[0]
    if kind == "size":
        _arity(function, args, 1)
        if not isinstance(args[0], tuple):
            raise Unreadable("a torch.Size of something other than a tuple")
        return args[0]
    if kind == "device":
        _arity(function, args, 1, 2)
        return OpaqueRecord("torch.device")
    if kind == "thnn-backend":
        _arity(function, args, 0)
        return OpaqueRecord("THNN backend")
    if kind == "numpy-scalar":
        _arity(function, args, 1, 2)
        return OpaqueRecord("numpy scalar")
    if kind == "numpy-dtype":
        _arity(function, args, 3)
        return OpaqueRecord("numpy dtype")
    if kind == "module":
        raise Refused(
            f"calls the constructor of {function.qualname}, which torch.save never writes "
            "(a module is restored from its saved state, never constructed)"
        )
    raise Refused(f"calls {function.qualname}, which torch.save never writes")


def build(target: Any, state: Any) -> None:
    """BUILD: a record keeps the state in its own dict; nothing's __setstate__ is called."""
    if isinstance(target, ModuleRecord):
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        for part in parts:
            if part is None:
                continue
            if not isinstance(part, dict):
                raise Unreadable(f"the state of {target.qualname} is a {describe(part)}")
            target.state.update(part)
    elif isinstance(target, OpaqueRecord):
        target.state = state
    elif type(target) is OrderedDict and (state is None or isinstance(state, (dict, tuple))):
        # A state_dict carries `_metadata` (per-module versions) as an attribute; PCB's
        # layout does not depend on it, so it is dropped rather than set on anything.
        pass
    else:
        raise Unreadable(f"BUILD on a {describe(target)}")
