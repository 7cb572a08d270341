"""Shape plans: what a classification walk decides for a dict, compiled once per shape.

Events of one source come in few shapes, and every decision a walk makes from a field's path and
key alone (its class by key, whether it is structural, whether it stands for its subtree) is the
same for every event of a shape. A dict's shape is its keys and the types of its values, in
order; a plan lists, for a shape at a field path, only what a walk still has to do per event:
the non-green fields to report and the containers to walk into. Green leaves cost nothing, and a
message of a known shape costs two tuples and one lookup per object instead of a decision per field.

A message of a shape seen before does not even need that: its dict plans are compiled into one
msgspec type of the whole message (every key, and whether each value is a scalar, an object or
an array, checked in C by :func:`msgspec.convert`; key order aside) and the few steps that reach
its findings, and, for a sampled message, the fields whose values are to be checked.

The classifier decides (:data:`Decide`); this module only remembers. A plan exists only when no
field of its dict needs its value checked on every message: the classifier walks other messages
field by field, and drops every plan when a value changes what it decided (:meth:`ShapePlans.clear`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

import msgspec

#: Distinct dict shapes (over all paths) remembered at most: beyond, plans start over.
MAX_PLANS = 4096
#: Fields all remembered plans (and, separately, all message plans and shapes) hold at most:
#: what bounds memory when clients send wide messages, whatever their count.
MAX_PLANNED_FIELDS = 100_000
#: A dict with more keys than this is walked field by field, never planned (keys that are data).
MAX_PLAN_KEYS = 256
#: A message with more planned fields than this gets no message plan (its msgspec type).
MAX_MESSAGE_PLAN_FIELDS = 512
#: Message plans tried per message kind (type, event name and the sizes of the roots), most recently used first, and
#: message shapes and kinds remembered at most (each plan holds a few msgspec types).
MESSAGE_PLANS_PER_KIND = 2
#: A kind's plans are tried in the order of their hits (a failed convert costs as much as a
#: successful one), halved when one reaches this: the order follows what comes now.
PLAN_HITS_HALVED_AT = 256
MAX_MESSAGE_PLANS = 1024
#: Values a site of a message plan remembers as holding its class at most, and the longest
#: string remembered (see :meth:`_MessagePlan.sites_hold`).
MAX_SITE_VALUES = 4096
MAX_REMEMBERED_LENGTH = 256
_SCALAR = str | int | float | bool | None

_LEAF, _DICT, _LIST = 0, 1, 2
#: A site step for an array its plan's type holds to objects (or to nothing): no string in it to
#: check, so its check gives the same answer for every value, decided once when compiled.
_OBJECTS = 3


class FieldClass(NamedTuple):
    """A field path with its class and the matchers that said so (never a value)."""

    path: str
    cls: str
    hits: tuple[str, ...]


class Finding(msgspec.Struct, frozen=True, gc=False):
    """One classified field: where it is, its class, and which matchers said so. (A msgspec
    Struct: a plan makes one per finding of every message, and it builds in a fifth of a named
    tuple's time. It is never part of a reference cycle, so the collector need not track it.)"""

    path: str
    container: dict[str, Any] | list[Any]
    key: str | int
    value: Any
    cls: str
    hits: tuple[str, ...]


_convert = msgspec.convert
_ValidationError = msgspec.ValidationError


class Shape:
    """Every field of a message, as an inventory books them: one object per distinct set of
    fields (compare by identity), so a message of a known shape is booked by one lookup."""

    __slots__ = ("fields",)

    def __init__(self, fields: tuple[FieldClass, ...]) -> None:
        self.fields = fields


#: ``decide(path, key, structural)``: the child's path, whether it is structural, its class and
#: hits, and whether its value is checked in sampled messages; or None when the field's value must
#: be checked on this message (no plan then).
Decide = Callable[[str, Any, bool], tuple[str, bool, str, tuple[str, ...], bool] | None]
#: One step of a plan: kind (leaf, dict, list), key, the field's path, class and hits, and for
#: containers the table of the shapes found at that path.
_Op = tuple[int, Any, str, str, tuple[str, ...], "_Table | None"]


class _Table(dict[tuple[Any, ...], "_Plan"]):
    """The plans of the dicts found at one field path (structural or not), by shape."""

    __slots__ = ("path", "scalars", "structural")

    def __init__(self, path: str, structural: bool) -> None:
        super().__init__()
        self.path = path
        self.structural = structural
        self.scalars = FieldClass(path, "green", ())  # what an array's scalar items are booked as


def _signature(node: dict[str, Any]) -> tuple[Any, ...]:
    """A dict's shape: its keys, then the types of its values, in order."""
    return (*node, *map(type, node.values()))


class _Plan:
    """What to do with a dict of one shape: ``steps`` by variant (scan or survey, yellow and
    red or red only; see :func:`_variant`): the findings to report and the containers to walk
    into (a survey also walks structural ones); ``fields``: every leaf of the dict with its class
    (what an inventory books); ``sites``: the leaves whose values a sampled message checks."""

    __slots__ = ("fields", "sites", "steps")

    def __init__(
        self, steps: tuple[tuple[_Op, ...], ...], fields: tuple[FieldClass, ...], sites: tuple[_Op, ...]
    ) -> None:
        self.steps = steps
        self.fields = fields
        self.sites = sites


#: A step of a message plan: ``(_LEAF, key, path, cls, hits)``, or ``(_DICT or _LIST, key,
#: steps, "", ())`` to reach findings below ``key`` (an array: in each of its items); among the
#: sites, ``(_OBJECTS, key, path, cls, hits)`` too (no finding: see :data:`_OBJECTS`).
_Step = tuple[Any, ...]


#: Where a finding is when no array is on the way: the keys from the message to its dict, then
#: its key, path, class and hits.
_Leaf = tuple[tuple[str, ...], str, str, str, tuple[str, ...]]


#: ``site_check(path, key, cls, hits)``: the check of one site's values, made once per site:
#: whether a value gives the field the class and matchers its plan has (the classifier's; every
#: value of the site is checked).
SiteCheck = Callable[[str, Any, str, tuple[str, ...]], Callable[[Any], bool]]


class _MessagePlan:
    """A message shape: the msgspec ``type`` a message has exactly when it has this shape, the
    steps from the message to its findings (non-green, then red only) and to the fields a sampled
    message checks, the same as ``leaves`` when no array is on the way (else None), and its
    :class:`Shape`."""

    __slots__ = ("_sites_hold", "hits", "leaves", "shape", "steps", "type")

    def __init__(self, type_: Any, steps: tuple[tuple[_Step, ...], ...], shape: Shape | None) -> None:
        self.type = type_
        self.steps = steps  # non-green findings, red ones, the sites to check in a sampled message
        self.leaves = tuple(_leaves(variant, ()) for variant in steps)
        self.shape = shape
        self._sites_hold: Callable[[dict[str, Any]], bool] | None = None
        self.hits = 0  # messages that took it lately (see PLAN_HITS_HALVED_AT)

    def sites_hold(self, message: dict[str, Any], site_check: SiteCheck, type_only: frozenset[type]) -> bool:
        """Whether every site of ``message`` (which has this shape) holds its planned class, by
        its ``site_check``. Each site remembers what held there (in memory only, like the classifier's
        value results): a string or an integer, or the type of a value whose class depends on
        its type only (``type_only``, given by the classifier): such a value costs one lookup,
        and only the others are checked."""
        check = self._sites_hold
        if check is None:
            try:
                check = _compile_sites(self.steps[_SITES], site_check, type_only)
            except (SyntaxError, RecursionError, MemoryError):
                # Nested past what Python compiles (20 loops, 100 indents): no site is
                # trusted, so each such message is classified field by field, as without a plan.
                check = _never_holds
            self._sites_hold = check
        return check(message)


def _never_holds(message: dict[str, Any]) -> bool:
    return False


def _compile_sites(
    steps: tuple[_Step, ...], site_check: SiteCheck, type_only: frozenset[type]
) -> Callable[[dict[str, Any]], bool]:
    """:meth:`_MessagePlan.sites_hold` as straight-line code (a loop per array on the way)."""
    namespace: dict[str, Any] = {}
    lines = ["def sites_hold(m):"]
    nodes = iter(range(1 << 30))

    def emit(steps: tuple[_Step, ...], node: str, indent: str) -> None:
        for kind, key, below, cls, hits in steps:
            if kind == _OBJECTS:
                if not site_check(below, key, cls, hits)([]):
                    lines.append(f"{indent}return False")
            elif kind == _LEAF:
                n = len(namespace) // 4
                strings: set[str] = set()
                integers: set[int] = set()
                types: set[type] = set()
                namespace[f"_s{n}"], namespace[f"_i{n}"], namespace[f"_t{n}"] = strings, integers, types
                namespace[f"_held{n}"] = _site_memo(
                    site_check(below, key, cls, hits), strings, integers, types, type_only
                )
                lines.append(f"{indent}v = {node}[{key!r}]")
                lines.append(
                    f"{indent}if not (v in _s{n} if (t := type(v)) is str else v in _i{n} if t is int else t in _t{n})"
                    f" and not _held{n}(v): return False"
                )
            elif kind == _DICT:
                child = f"n{next(nodes)}"
                lines.append(f"{indent}{child} = {node}[{key!r}]")
                emit(below, child, indent)
            else:
                item = f"n{next(nodes)}"
                lines.append(f"{indent}for {item} in {node}[{key!r}]:")
                emit(below, item, indent + "    ")

    emit(steps, "m", "    ")
    lines.append("    return True")
    # Only our own code: keys enter as repr() of str (msgspec refused others), the rest as names.
    exec(compile("\n".join(lines), "<privacy sites>", "exec"), namespace)
    sites_hold: Callable[[dict[str, Any]], bool] = namespace["sites_hold"]
    return sites_hold


def _site_memo(
    check: Callable[[Any], bool],
    strings: set[str],
    integers: set[int],
    types: set[type],
    type_only: frozenset[type],
) -> Callable[[Any], bool]:
    """A site's check of a value it does not remember: ``check``, then remembered when it held."""

    def held(value: Any) -> bool:
        if not check(value):
            return False
        kind = type(value)
        if kind in type_only:
            types.add(kind)
        elif kind is int or (kind is str and len(value) <= MAX_REMEMBERED_LENGTH):
            memo: set[Any] = strings if kind is str else integers
            if len(memo) >= MAX_SITE_VALUES:
                # Full: one value out for this one, not all of them. Starting over halved what a
                # site held on average, and so how often values a little more numerous than
                # MAX_SITE_VALUES were found (bench/privacy.py's 5,000 people: 45% -> 77%).
                memo.pop()
            memo.add(value)
        return True

    return held


def _leaves(steps: tuple[_Step, ...], keys: tuple[str, ...]) -> tuple[_Leaf, ...] | None:
    leaves: list[_Leaf] = []
    for kind, key, path_or_steps, cls, hits in steps:
        if kind == _LEAF:
            leaves.append((keys, key, path_or_steps, cls, hits))
        elif kind == _LIST:
            return None
        elif kind == _DICT:
            below = _leaves(path_or_steps, (*keys, key))
            if below is None:
                return None
            leaves.extend(below)
    return tuple(leaves)


def _variant(survey: bool, red_only: bool) -> int:
    return 2 * survey + red_only


_ALL = tuple(_variant(survey, red_only) for survey in (False, True) for red_only in (False, True))
_SURVEYS = (_variant(True, False), _variant(True, True))
_NON_GREEN_ONLY = (_variant(False, False), _variant(True, False))


_SITES = 2  # the message plan steps to the fields a sampled message checks


def _follow(plan: _MessagePlan, variant: int, message: dict[str, Any], found: list[Finding]) -> None:
    """Add what the plan's ``variant`` steps reach in ``message`` (which has its shape) to ``found``."""
    leaves = plan.leaves[variant]
    if leaves is None:
        _run(plan.steps[variant], message, found)
        return
    for keys, key, path, cls, hits in leaves:
        node: Any = message
        for name in keys:
            node = node[name]
        found.append(Finding(path, node, key, node[key], cls, hits))


def _run(steps: tuple[_Step, ...], node: dict[str, Any], found: list[Finding]) -> None:
    """Follow a message plan's steps in a message that has its shape."""
    for kind, key, path_or_steps, cls, hits in steps:
        if kind == _LEAF:
            found.append(Finding(path_or_steps, node, key, node[key], cls, hits))
        elif kind == _DICT:
            _run(path_or_steps, node[key], found)
        elif kind == _LIST:
            for item in node[key]:
                _run(path_or_steps, item, found)


def _compile_kind(roots: tuple[str, ...]) -> Callable[[dict[str, Any], bool], tuple[Any, ...]]:
    """``kind(message, survey)``: a message's kind, by which its message plans are found: its
    type, event name and the sizes of its roots, which tell most shapes of one kind apart (an
    optional property or trait), so a message rarely tries a plan of another shape (a failed
    convert costs as much as a successful one). A kind only says which plans to try (the convert
    decides), so an absent root counts as empty and a root that is no dict may share a kind with
    one. Raises TypeError for a root with no size. (Generated: a loop over the roots cost three
    times as much.)"""
    sizes = "".join(f"len(get({root!r}, ())), " for root in roots)
    namespace: dict[str, Any] = {}
    source = (
        f"def kind(message, survey):\n    get = message.get\n    return (survey, get('type'), get('event'), {sizes})"
    )
    exec(compile(source, "<message kind>", "exec"), namespace)  # the roots enter as repr() of str
    kind: Callable[[dict[str, Any], bool], tuple[Any, ...]] = namespace["kind"]
    return kind


class ShapePlans:
    """The plans of one classifier, per field path and shape, and the message shapes they make."""

    def __init__(self, decide: Decide, roots: tuple[str, ...], *, red_sites: bool = False) -> None:
        self._decide = decide
        #: Red fields whose values are checked are sites too (their class can fall again: a
        #: classifier with ``value_checks = "every"`` learns nothing for good).
        self._red_sites = red_sites
        self._roots = roots  # the message's keys a walk starts from
        self._kind = _compile_kind(roots)
        self._tables: dict[tuple[str, bool], _Table] = {}
        self._plans = 0
        self._planned_fields = 0  # fields of the plans in _tables
        self._shaped_fields = 0  # fields of the shapes in _by_fields
        self._compiled_fields = 0  # fields of the message plans in _compiled
        self._shapes: dict[tuple[_Plan | FieldClass, ...], Shape] = {}
        self._by_fields: dict[tuple[FieldClass, ...], Shape] = {}
        #: Message plans by the dict plans a message took (None: none can be compiled), and the
        #: ones to try first by message kind.
        self._compiled: dict[tuple[bool, tuple[_Plan | FieldClass, ...]], _MessagePlan | None] = {}
        self._recent: dict[tuple[Any, ...], list[_MessagePlan]] = {}

    def clear(self) -> None:
        """Forget every plan (a decision changed)."""
        self._tables.clear()
        self._shapes.clear()
        self._compiled.clear()
        self._recent.clear()
        self._plans = 0
        self._planned_fields = 0
        self._compiled_fields = 0

    def shape_of(self, fields: tuple[FieldClass, ...]) -> Shape:
        """The one :class:`Shape` of these fields."""
        shape = self._by_fields.get(fields)
        if shape is None:
            if len(self._by_fields) >= MAX_PLANS or self._shaped_fields >= MAX_PLANNED_FIELDS:
                self._by_fields.clear()
                self._shaped_fields = 0
            shape = self._by_fields[fields] = Shape(fields)
            self._shaped_fields += len(fields)
        return shape

    def findings(
        self,
        message: dict[str, Any],
        *,
        survey: bool,
        red_only: bool,
        sites: list[Finding] | None = None,
        holds: tuple[SiteCheck, frozenset[type]] | None = None,
    ) -> tuple[list[Finding], Shape | None] | None:
        """The non-green (or only the red) findings of a message, and its shape when ``survey``;
        or None when some dict has no plan (a value to check: walk it field by field). Given
        ``sites``, a sampled message: only a message plan serves, and it adds the fields whose
        values are to be checked (with the class a check must not change) to ``sites``. Given
        ``holds`` instead (what makes a site's check, and the types whose class is their type's), only a
        message plan serves too, and only when every site holds (see :meth:`_MessagePlan.sites_hold`)."""
        try:
            kind = self._kind(message, survey)
            recent = self._recent.get(kind)
        except TypeError:  # an unhashable type or event, or a root without a size: no kind
            kind, recent = None, None
        if recent is not None:
            for index, plan in enumerate(recent):
                try:
                    _convert(message, plan.type)
                except _ValidationError:
                    continue
                hits = plan.hits = plan.hits + 1
                if index and hits > recent[index - 1].hits:  # the kind's most frequent shape is tried first
                    recent[index - 1], recent[index] = plan, recent[index - 1]
                if hits >= PLAN_HITS_HALVED_AT:  # what was frequent long ago fades
                    for other in recent:
                        other.hits >>= 1
                found: list[Finding] = []
                leaves = plan.leaves[red_only]
                if leaves is None:
                    _run(plan.steps[red_only], message, found)
                else:  # (inline: this is the path nearly every message takes)
                    for keys, key, path, cls, matchers in leaves:
                        node: Any = message
                        for name in keys:
                            node = node[name]
                        found.append(Finding(path, node, key, node[key], cls, matchers))
                if sites is not None:
                    _follow(plan, _SITES, message, sites)
                elif holds is not None and not plan.sites_hold(message, *holds):
                    return None
                return found, plan.shape
        if sites is not None or holds is not None:
            return None
        found = []
        visited: list[_Plan | FieldClass] = []
        variant = _variant(survey, red_only)
        roots = [(root, node) for root in self._roots if isinstance(node := message.get(root), dict)]
        for path, node in roots:
            table = self._tables.get((path, False))
            if table is None:
                table = self._table(path, False)
            if not self._visit(node, table, variant, found, visited):
                return None
        token = tuple(visited)
        shape: Shape | None = None
        if survey:
            shape = self._shapes.get(token)
            if shape is None:
                if len(self._shapes) >= MAX_PLANS:
                    self._shapes.clear()
                fields = tuple(f for p in visited for f in (p.fields if isinstance(p, _Plan) else (p,)))
                shape = self._shapes[token] = self.shape_of(fields)
        if kind is not None:
            self._remember(kind, (survey, token), message, roots, shape)
        return found, shape

    def _remember(
        self,
        kind: tuple[Any, ...],
        token: tuple[bool, tuple[_Plan | FieldClass, ...]],
        message: dict[str, Any],
        roots: list[tuple[str, dict[str, Any]]],
        shape: Shape | None,
    ) -> None:
        """Make the message plan of this message's shape (once per shape) the first of its kind."""
        if token in self._compiled:
            plan = self._compiled[token]
        else:
            size = sum(len(p.fields) if isinstance(p, _Plan) else 1 for p in token[1])
            if len(self._compiled) >= MAX_MESSAGE_PLANS or self._compiled_fields + size > MAX_PLANNED_FIELDS:
                self._compiled.clear()
                self._recent.clear()
                self._compiled_fields = 0
            plan = None
            if size <= MAX_MESSAGE_PLAN_FIELDS:
                try:
                    plan = self._compile_message(message, roots, token[0], shape)
                except (ValueError, TypeError, RecursionError):
                    # Keys msgspec cannot take as field names (quotes, backslashes, control
                    # characters), or nesting too deep to compile: walk such messages instead.
                    plan = None
            self._compiled[token] = plan
            self._compiled_fields += size
        if plan is None:
            return
        if kind not in self._recent and len(self._recent) >= MAX_MESSAGE_PLANS:
            self._recent.clear()  # event names are data: many kinds must not grow it
        recent = self._recent.setdefault(kind, [])
        if plan in recent:
            recent.remove(plan)
        recent.insert(0, plan)
        del recent[MESSAGE_PLANS_PER_KIND:]

    def _compile_message(
        self, message: dict[str, Any], roots: list[tuple[str, dict[str, Any]]], survey: bool, shape: Shape | None
    ) -> _MessagePlan | None:
        present = dict(roots)
        fields: list[tuple[str, Any, Any]] = []
        steps: tuple[list[_Step], ...] = ([], [], [])
        for n, root in enumerate(self._roots):
            node = present.get(root)
            if node is None:
                if root in message:
                    return None  # there, but not an object: not a shape a type can say
                fields.append((f"f{n}", msgspec.UnsetType, msgspec.field(default=msgspec.UNSET, name=root)))
                continue
            table = self._tables.get((root, False))
            compiled = None if table is None else self._compile_dict(node, table, survey)
            if compiled is None:
                return None
            type_, root_steps = compiled
            fields.append((f"f{n}", type_, msgspec.field(name=root)))
            for variant, below in enumerate(root_steps):
                if below:
                    steps[variant].append((_DICT, root, below, "", ()))
        type_ = msgspec.defstruct("MessageShape", fields, kw_only=True, gc=False)
        return _MessagePlan(type_, tuple(map(tuple, steps)), shape)

    def _compile_dict(
        self, node: dict[str, Any], table: _Table, survey: bool
    ) -> tuple[Any, tuple[tuple[_Step, ...], ...]] | None:
        """The msgspec type of dicts of this one's shape, and the steps to their findings (non-green,
        red) and to the fields a sampled message checks."""
        plan = table.get(_signature(node))
        if plan is None:
            return None
        ops: dict[Any, list[_Op]] = {}
        for op in plan.steps[_variant(survey, False)]:
            ops.setdefault(op[1], []).append(op)  # a Yellow object: its finding, then the walk into it
        sites = {op[1]: op for op in plan.sites}
        fields: list[tuple[str, Any, Any]] = []
        steps: tuple[list[_Step], ...] = ([], [], [])
        for n, (key, value) in enumerate(node.items()):
            if not isinstance(key, str):
                return None
            key_ops = ops.get(key)
            type_: Any = _SCALAR
            site = sites.get(key)
            if site is not None:
                steps[_SITES].append(site[:5])
            site_index = len(steps[_SITES]) - 1
            if key_ops is None and isinstance(value, dict | list):  # a structural subtree a scan skips
                type_ = Any
            for op in key_ops or ():
                if op[0] == _LEAF:  # a finding; a Red one stands for its subtree, whatever the value
                    # A Yellow leaf stays a scalar: an object or array there later may hold Red
                    # fields, and only the walk (or a plan of that shape) looks inside it.
                    type_ = Any if op[3] == "red" else _SCALAR
                    steps[0].append(op[:5])
                    if op[3] == "red":
                        steps[1].append(op[:5])
                else:
                    sub_table = op[5]
                    assert sub_table is not None  # a container step has its table
                    compiled = self._compile_container(value, sub_table, survey)
                    if compiled is None:
                        return None
                    type_, sub = compiled
                    if site is not None and isinstance(value, list) and (not value or isinstance(value[0], dict)):
                        steps[_SITES][site_index] = (_OBJECTS, *site[1:5])  # type_ holds it to objects
                    for variant, below in enumerate(sub):
                        if below:
                            steps[variant].append((op[0], key, below, "", ()))
            fields.append((f"f{n}", type_, msgspec.field(name=key)))
        type_ = msgspec.defstruct("DictShape", fields, forbid_unknown_fields=True, gc=False)
        return type_, tuple(map(tuple, steps))

    def _compile_container(
        self, value: Any, table: _Table, survey: bool
    ) -> tuple[Any, tuple[tuple[_Step, ...], ...]] | None:
        if isinstance(value, dict):
            return self._compile_dict(value, table, survey)
        if not value:
            return Annotated[list[Any], msgspec.Meta(max_length=0)], ((), (), ())
        if not any(isinstance(item, dict | list) for item in value):
            return Annotated[list[_SCALAR], msgspec.Meta(min_length=1)], ((), (), ())
        first = value[0]
        if not isinstance(first, dict) or any(
            not isinstance(item, dict) or _signature(item) != _signature(first) for item in value
        ):
            return None  # arrays of mixed items: walked dict by dict
        compiled = self._compile_dict(first, table, survey)
        if compiled is None:
            return None
        item_type, steps = compiled
        return Annotated[list[item_type], msgspec.Meta(min_length=1)], steps  # type: ignore[valid-type]

    def _visit(
        self,
        node: dict[str, Any],
        table: _Table,
        variant: int,
        found: list[Finding],
        visited: list[_Plan | FieldClass] | None,
    ) -> bool:
        plan = table.get(_signature(node))
        if plan is None:
            plan = self._plan(node, table)
            if plan is None:
                return False
        if visited is not None and (not visited or visited[-1] is not plan):
            visited.append(plan)
        for kind, key, path, cls, hits, sub in plan.steps[variant]:
            value = node[key]
            if kind == _LEAF:
                found.append(Finding(path, node, key, value, cls, hits))
            elif kind == _DICT:
                if not self._visit(value, sub, variant, found, visited):  # type: ignore[arg-type]
                    return False
            elif not self._visit_list(value, sub, variant, found, visited):  # type: ignore[arg-type]
                return False
        return True

    def _visit_list(
        self,
        items: list[Any],
        table: _Table,
        variant: int,
        found: list[Finding],
        visited: list[_Plan | FieldClass] | None,
    ) -> bool:
        """Array items take the array's path. Scalar items are booked green: the array itself is
        classified by its strings' values (a site of sampled messages; see Classifier._value_class)."""
        scalars = False
        for item in items:
            if isinstance(item, dict):
                if not self._visit(item, table, variant, found, visited):
                    return False
            elif isinstance(item, list):
                if not self._visit_list(item, table, variant, found, visited):
                    return False
            elif visited is not None and not scalars:
                scalars = True
                visited.append(table.scalars)
        return True

    def _table(self, path: str, structural: bool) -> _Table:
        table = self._tables.get((path, structural))
        if table is None:
            table = self._tables[(path, structural)] = _Table(path, structural)
        return table

    def _plan(self, node: dict[str, Any], table: _Table) -> _Plan | None:
        if len(node) > MAX_PLAN_KEYS:
            return None
        steps: tuple[list[_Op], ...] = ([], [], [], [])
        fields: list[FieldClass] = []
        sites: list[_Op] = []
        for key, value in node.items():
            decision = self._decide(table.path, key, table.structural)
            if decision is None:
                return None
            path, exempt, cls, hits, sampled = decision
            kind = _DICT if isinstance(value, dict) else _LIST if isinstance(value, list) else _LEAF
            if sampled and kind == _LIST and (cls != "red" or self._red_sites):  # its strings are its value
                sites.append((_LEAF, key, path, cls, hits, None))
            elif sampled and kind == _DICT and self._red_sites:
                # An object's class is its key's, whatever its path's last value said: checked.
                sites.append((_LEAF, key, path, cls, hits, None))
            if kind != _LEAF and cls == "yellow":  # stands for its subtree, and what is Red in it is found too
                fields.append(FieldClass(path, cls, hits))
                container: _Op = (_LEAF, key, path, cls, hits, None)
                for variant in _NON_GREEN_ONLY:
                    steps[variant].append(container)
                op: _Op = (kind, key, path, cls, hits, self._table(path, exempt))
                variants = _ALL
            elif kind != _LEAF and cls == "green":  # walked into; a scan skips structural subtrees
                op = (kind, key, path, cls, hits, self._table(path, exempt))
                variants = _SURVEYS if exempt else _ALL
            else:  # a leaf, or a Red field standing for its subtree
                fields.append(FieldClass(path, cls, hits))
                op = (_LEAF, key, path, cls, hits, None)
                variants = _ALL if cls == "red" else _NON_GREEN_ONLY if cls != "green" else ()
                if sampled and kind == _LEAF and (cls != "red" or self._red_sites):
                    sites.append(op)
            for variant in variants:
                steps[variant].append(op)
        if self._plans >= MAX_PLANS or self._planned_fields >= MAX_PLANNED_FIELDS:
            self.clear()  # keys that are data (ids as keys): start over rather than grow
            table = self._table(table.path, table.structural)
        self._plans += 1
        self._planned_fields += len(node)
        plan = table[_signature(node)] = _Plan(tuple(map(tuple, steps)), tuple(fields), tuple(sites))
        return plan
