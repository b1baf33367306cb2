"""A small seeded generator of hostile inputs: mutated JSON documents, mutated text captures, hostile option values.

Everything is derived from ``random.Random(seed)`` with a seed made of the case's name, so a case id always
produces the same bytes (on every machine and Python version: only ``random.Random``'s integer methods are used,
which are stable across versions). No dependency beyond the standard library.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from typing import Any

MARKUP = [
    "[/x]",
    "[bold]x[/bold]",
    "[/]",
    "[link=file:///etc/passwd]x[/link]",
    "\x1b[2J\x1b[H",
    "\x1b]0;title\x07",
    "[red",
    "x\x00y",
    "\u202e\u0000\ufffd",
    "<script>alert(1)</script>",
    "{task.description}",
    "%s%n%x",
]
"""Strings a terminal, rich markup or an HTML report must show as text: markup tags, escape sequences, NULs."""

NUMBERS: list[Any] = [
    float("nan"),
    float("inf"),
    float("-inf"),
    -1,
    -1.5,
    -1e308,
    0,
    1e308,
    10**30,
    2**63,
    -(2**63),
    1e-320,
]
"""Numbers a loader should refuse (non-finite, negative) or survive (zero, huge, subnormal)."""

OPTION_VALUES = ["nan", "inf", "-inf", "-1", "0", "1e309", "99999999999999999999999", "", "abc", "[bold]x[/bold]",
                 "\x1b[2J", "1.5"]
"""Hostile values for every numeric or string option."""


def seed_of(*parts: object) -> int:
    """A stable seed from a case's name (``hash()`` of a str changes between runs)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def rng_for(*parts: object) -> random.Random:
    return random.Random(seed_of(*parts))


# ---------------------------------------------------------------------------------------------------- JSON trees


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) in a JSON tree, the root included (``()``)."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(node: Any, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _pick(rng: random.Random, items: list) -> Any:
    return items[rng.randrange(len(items))]


def _pick_path(rng: random.Random, root: Any, want: Callable[[Any], bool], prefer: tuple[str, ...] = ()) -> tuple:
    """A random path whose node satisfies ``want``; paths through a key named in ``prefer`` come first half the
    time (so the measurements, not only the run facts, are hit)."""
    paths = [p for p in _paths(root) if want(_get(root, p))]
    if not paths:
        return ()
    if prefer and rng.randrange(2):
        preferred = [p for p in paths if any(k in prefer for k in p if isinstance(k, str))]
        if preferred:
            return _pick(rng, preferred)
    return _pick(rng, paths)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


FIGURE_KEYS = ("measurements", "stat", "samples", "median", "busbw_gbps", "algbw_gbps", "value", "bandwidth_matrix",
               "results", "time", "algbw", "busbw", "hidden_size", "num_hidden_layers", "num_attention_heads")
"""Keys whose numbers are the figures (bandwidths, latencies, model dimensions)."""


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, allow_nan=True).encode()


def _deep(depth: int, leaf: Any = 1) -> str:
    return "[" * depth + json.dumps(leaf) + "]" * depth


def json_mutation_names() -> list[str]:
    return list(JSON_MUTATIONS)


def mutate_json(raw: bytes, name: str, rng: random.Random) -> bytes:
    """``raw`` (a JSON document) mutated by the mutation ``name``."""
    return JSON_MUTATIONS[name](raw, rng)


def _tree(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"))


def _m_delete_key(raw: bytes, rng: random.Random) -> bytes:
    root = _tree(raw)
    for _ in range(1 + rng.randrange(3)):
        path = _pick_path(rng, root, lambda n: isinstance(n, dict) and bool(n), FIGURE_KEYS)
        node = _get(root, path)
        if isinstance(node, dict) and node:
            del node[_pick(rng, sorted(node))]
    return _dumps(root)


WRONG_TYPES: list[Any] = ["12", "", [], {}, None, True, [1, 2], {"a": 1}, 3.5, -7, "nan"]


def _m_wrong_type(raw: bytes, rng: random.Random) -> bytes:
    root = _tree(raw)
    for _ in range(1 + rng.randrange(3)):
        path = _pick_path(rng, root, lambda n: True, FIGURE_KEYS)
        if path:
            old = _get(root, path)
            choices = [w for w in WRONG_TYPES if type(w) is not type(old)]
            root = _set(root, path, _pick(rng, choices))
    return _dumps(root)


def _number_mutation(values: list[Any]) -> Callable[[bytes, random.Random], bytes]:
    def mutate(raw: bytes, rng: random.Random) -> bytes:
        root = _tree(raw)
        count = 1 + rng.randrange(4)
        for _ in range(count):
            path = _pick_path(rng, root, _is_number, FIGURE_KEYS)
            if path:
                root = _set(root, path, _pick(rng, values))
        return _dumps(root)

    return mutate


def _m_all_numbers(raw: bytes, rng: random.Random) -> bytes:
    """Every number of one kind: the whole file NaN, or negative, or huge."""
    root = _tree(raw)
    value = _pick(rng, [float("nan"), float("inf"), -1.0, 1e308])
    for path in [p for p in _paths(root) if _is_number(_get(root, p))]:
        root = _set(root, path, value)
    return _dumps(root)


def _m_markup(raw: bytes, rng: random.Random) -> bytes:
    root = _tree(raw)
    for _ in range(1 + rng.randrange(4)):
        path = _pick_path(rng, root, lambda n: isinstance(n, str), ("name", "reason", "notes", "problems",
                                                                   "probe", "src", "hostname", "path_class"))
        if path:
            root = _set(root, path, _pick(rng, MARKUP))
    return _dumps(root)


def _m_markup_keys(raw: bytes, rng: random.Random) -> bytes:
    """A dict key (probe names, NVML call names, ...) replaced by markup."""
    root = _tree(raw)
    path = _pick_path(rng, root, lambda n: isinstance(n, dict) and bool(n))
    node = _get(root, path)
    if isinstance(node, dict) and node:
        key = _pick(rng, sorted(node))
        node[_pick(rng, MARKUP)] = node.pop(key)
    return _dumps(root)


def _m_deep(raw: bytes, rng: random.Random) -> bytes:
    """A value replaced by a list nested far deeper than a recursive reader can go."""
    root = _tree(raw)
    path = _pick_path(rng, root, lambda n: True, FIGURE_KEYS)
    marker = "@@DEEP@@"
    root = _set(root, path, marker) if path else marker
    depth = _pick(rng, [64, 1000, 100_000])
    return _dumps(root).replace(json.dumps(marker).encode(), _deep(depth).encode(), 1)


def _m_huge_array(raw: bytes, rng: random.Random) -> bytes:
    root = _tree(raw)
    path = _pick_path(rng, root, lambda n: isinstance(n, list) and bool(n), FIGURE_KEYS)
    node = _get(root, path) if path else None
    if isinstance(node, list) and node:
        # numbers: 200 000 of them; records (measurements, pairs, rows): 5 000, each a copy of a real one
        big = [node[0]] * 200_000 if _is_number(node[0]) else [node[i % len(node)] for i in range(5_000)]
        root = _set(root, path, big)
    return _dumps(root)


def _m_truncate(raw: bytes, rng: random.Random) -> bytes:
    return raw[: rng.randrange(max(1, len(raw)))]


def _m_invalid_utf8(raw: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(max(1, len(raw)))
    return raw[:at] + _pick(rng, [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]) + raw[at:]


def _m_empty(raw: bytes, rng: random.Random) -> bytes:
    return _pick(rng, [b"", b" ", b"\n", b"\x00", b"\xef\xbb\xbf"])


def _m_top_level(raw: bytes, rng: random.Random) -> bytes:
    return _pick(rng, [b"[]", b"null", b'"x"', b"1", b"NaN", b"true", b"{}", b"[{}]", b"-Infinity"])


def _m_header(raw: bytes, rng: random.Random) -> bytes:
    """The versioning fields: kind and schema_version of other types or values."""
    root = _tree(raw)
    if not isinstance(root, dict):
        return raw
    key = _pick(rng, ["kind", "schema_version"])
    value = _pick(rng, [0, -1, 2, 10**30, "1", 1.0, True, None, float("nan"), [], "gpuprobe.results",
                        "gpuprobe.validation", "[bold]x[/bold]"])
    if rng.randrange(4) == 0:
        root.pop(key, None)
    else:
        root[key] = value
    return _dumps(root)


def _m_unknown_keys(raw: bytes, rng: random.Random) -> bytes:
    root = _tree(raw)
    path = _pick_path(rng, root, lambda n: isinstance(n, dict))
    node = _get(root, path)
    if isinstance(node, dict):
        node[_pick(rng, ["__proto__", "extra", "", "[/x]", "0"])] = _pick(rng, WRONG_TYPES)
    return _dumps(root)


def _m_bom(raw: bytes, rng: random.Random) -> bytes:
    return b"\xef\xbb\xbf" + raw


def _m_huge_string(raw: bytes, rng: random.Random) -> bytes:
    root = _tree(raw)
    path = _pick_path(rng, root, lambda n: isinstance(n, str), ("name", "probe", "src", "reason"))
    if path:
        root = _set(root, path, "A" * 1_000_000)
    return _dumps(root)


def _m_list_entries(raw: bytes, rng: random.Random) -> bytes:
    """A list's element replaced by another type or duplicated many times, a list emptied."""
    root = _tree(raw)
    path = _pick_path(rng, root, lambda n: isinstance(n, list) and bool(n), FIGURE_KEYS)
    node = _get(root, path) if path else None
    if isinstance(node, list) and node:
        how = rng.randrange(3)
        if how == 0:
            node[rng.randrange(len(node))] = _pick(rng, WRONG_TYPES)
        elif how == 1:
            node.clear()
        else:
            node.extend([node[0]] * 50)
    return _dumps(root)


JSON_MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "delete_key": _m_delete_key,
    "wrong_type": _m_wrong_type,
    "nan": _number_mutation([float("nan")]),
    "inf": _number_mutation([float("inf"), float("-inf")]),
    "negative": _number_mutation([-1, -1.5, -1e308, -(2**63)]),
    "huge": _number_mutation([1e308, 10**30, 2**63, 10**400]),
    "zero": _number_mutation([0, 0.0, 1e-320]),
    "mixed_numbers": _number_mutation(NUMBERS),
    "all_numbers": _m_all_numbers,
    "markup": _m_markup,
    "markup_key": _m_markup_keys,
    "deep_nesting": _m_deep,
    "huge_array": _m_huge_array,
    "huge_string": _m_huge_string,
    "list_entries": _m_list_entries,
    "truncate": _m_truncate,
    "invalid_utf8": _m_invalid_utf8,
    "empty": _m_empty,
    "top_level": _m_top_level,
    "header": _m_header,
    "unknown_key": _m_unknown_keys,
    "bom": _m_bom,
}


# ---------------------------------------------------------------------------------------------- model config.json

CONFIG_DIMS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "intermediate_size",
               "vocab_size", "max_position_embeddings", "head_dim", "num_experts", "num_local_experts",
               "num_experts_per_tok", "moe_intermediate_size", "n_routed_experts", "kv_lora_rank", "sliding_window",
               "torch_dtype", "quantization_config", "architectures", "model_type", "tie_word_embeddings",
               "text_config", "num_key_value_heads")
DIM_VALUES: list[Any] = [0, -1, -4096, 10**12, 10**30, 2**63, 1e308, float("nan"), float("inf"), 3.5, "4096", "",
                         None, [], {}, True, False, [4096], "[bold]x[/bold]"]


def config_mutation_names() -> list[str]:
    return ["dim", "dims", "drop_dim", *JSON_MUTATIONS]


def mutate_config(raw: bytes, name: str, rng: random.Random) -> bytes:
    """A model config.json mutated: one or several dimensions set to zero, negative, huge or a wrong type,
    a dimension removed, or any of the JSON mutations."""
    if name in JSON_MUTATIONS:
        return JSON_MUTATIONS[name](raw, rng)
    root = _tree(raw)
    present = [k for k in CONFIG_DIMS if k in root] or list(root)
    if name == "drop_dim":
        root.pop(_pick(rng, present), None)
    else:
        for _ in range(1 if name == "dim" else 2 + rng.randrange(3)):
            key = _pick(rng, present) if rng.randrange(4) else _pick(rng, list(CONFIG_DIMS))
            root[key] = _pick(rng, DIM_VALUES)
    return _dumps(root)


# ---------------------------------------------------------------------------------------------------- text captures

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


def text_mutation_names() -> list[str]:
    return list(TEXT_MUTATIONS)


def mutate_text(raw: bytes, name: str, rng: random.Random) -> bytes:
    return TEXT_MUTATIONS[name](raw, rng)


def _lines(raw: bytes) -> list[str]:
    return raw.decode("utf-8", errors="replace").split("\n")


def _join(lines: list[str]) -> bytes:
    return "\n".join(lines).encode("utf-8", errors="surrogateescape")


def _t_drop_lines(raw: bytes, rng: random.Random) -> bytes:
    lines = _lines(raw)
    for _ in range(1 + rng.randrange(max(1, len(lines) // 4))):
        if lines:
            del lines[rng.randrange(len(lines))]
    return _join(lines)


def _number_swap(values: list[str]) -> Callable[[bytes, random.Random], bytes]:
    def mutate(raw: bytes, rng: random.Random) -> bytes:
        text = raw.decode("utf-8", errors="replace")
        spots = list(_NUMBER.finditer(text))
        if not spots:
            return raw
        chosen = sorted({rng.randrange(len(spots)) for _ in range(1 + rng.randrange(6))}, reverse=True)
        for i in chosen:
            m = spots[i]
            text = text[: m.start()] + _pick(rng, values) + text[m.end():]
        return text.encode()

    return mutate


def _t_all_numbers(raw: bytes, rng: random.Random) -> bytes:
    value = _pick(rng, ["nan", "-1", "inf", "1e999", "N/A"])
    text = raw.decode("utf-8", errors="replace")
    # the figures only: numbers with a decimal point (bandwidths, times), not the indices and sizes
    return re.sub(r"(?<![\w.])\d+\.\d+(?![\w.])", value, text).encode()


def _t_row_index(raw: bytes, rng: random.Random) -> bytes:
    """A matrix row or a GPU name's index turned into a huge or negative one (nvbandwidth rows, topo's GPU0)."""
    lines = _lines(raw)
    rows = [i for i, line in enumerate(lines) if re.match(r"\s*(\d+|GPU\d+)\s", line)]
    if not rows:
        return _number_swap(["999999", "-1"])(raw, rng)
    for _ in range(1 + rng.randrange(3)):
        i = _pick(rng, rows)
        big = _pick(rng, ["999999", "-1", "99999999999999999999", "4294967296"])
        lines[i] = re.sub(r"^(\s*)(GPU)?\d+", lambda m, b=big: f"{m.group(1)}{m.group(2) or ''}{b}", lines[i], count=1)
    return _join(lines)


def _t_truncate(raw: bytes, rng: random.Random) -> bytes:
    return raw[: rng.randrange(max(1, len(raw)))]


def _t_duplicate(raw: bytes, rng: random.Random) -> bytes:
    lines = _lines(raw)
    if lines:
        i = rng.randrange(len(lines))
        lines[i:i] = [lines[i]] * (1 + rng.randrange(5))
    return _join(lines)


def _t_shuffle(raw: bytes, rng: random.Random) -> bytes:
    lines = _lines(raw)
    rng.shuffle(lines)
    return _join(lines)


def _t_markup(raw: bytes, rng: random.Random) -> bytes:
    lines = _lines(raw)
    for _ in range(1 + rng.randrange(4)):
        i = rng.randrange(len(lines))
        words = lines[i].split(" ")
        j = rng.randrange(len(words))
        words[j] = _pick(rng, MARKUP)
        lines[i] = " ".join(words)
    return _join(lines)


def _t_long_line(raw: bytes, rng: random.Random) -> bytes:
    lines = _lines(raw)
    i = rng.randrange(len(lines) + 1)
    lines.insert(i, _pick(rng, ["9" * 100_000, " 0 " + "1.0 " * 50_000, "x" * 1_000_000]))
    return _join(lines)


def _t_wide_matrix(raw: bytes, rng: random.Random) -> bytes:
    """A matrix header claiming many more columns than its rows have."""
    lines = _lines(raw)
    heads = [i for i, line in enumerate(lines) if re.fullmatch(r"\s*(\d+\s+)*\d+\s*", line) or "GPU0" in line]
    if not heads:
        return _t_long_line(raw, rng)
    i = _pick(rng, heads)
    n = _pick(rng, [64, 5000])
    lines[i] = lines[i] + "".join(f" {k}" if "GPU0" not in lines[i] else f"\tGPU{k}" for k in range(1, n))
    return _join(lines)


TEXT_MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "drop_lines": _t_drop_lines,
    "number_to_word": _number_swap(["abc", "N/A", "", "--", "1,5", "0x10", "1e", "[/x]"]),
    "number_to_nan": _number_swap(["nan", "NaN", "inf", "-inf", "Infinity"]),
    "number_negative": _number_swap(["-1", "-52.78", "-0.0", "-99999999"]),
    "number_huge": _number_swap(["1e999", "99999999999999999999999", "1.7976931348623157e308", "4294967296"]),
    "all_figures": _t_all_numbers,
    "row_index": _t_row_index,
    "truncate": _t_truncate,
    "duplicate_lines": _t_duplicate,
    "shuffle_lines": _t_shuffle,
    "markup": _t_markup,
    "long_line": _t_long_line,
    "wide_matrix": _t_wide_matrix,
    "invalid_utf8": _m_invalid_utf8,
    "empty": _m_empty,
}
