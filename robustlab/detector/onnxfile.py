"""An .onnx file checked before ONNX Runtime sees it: a whole protobuf, its inputs and outputs, no tensor data outside the model's folder (a small wire-format reader, no onnx package needed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from robustlab.errors import RobustlabError

# --------------------------------------------------------------------------- ONNX files
# An .onnx file is a protobuf ModelProto: data, no code (ONNX Runtime runs only its built-in
# operators). It is walked here at the wire level, without the onnx package, so a truncated or
# garbage file is a one-line error before ONNX Runtime sees it.

ONNX_MAX_BYTES = 2**31  # protobuf's own limit for one message
_ONNX_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"}  # ops that keep an activation's meaning


class _WireError(Exception):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError("a varint runs past its message")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _wire_fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message in ``buf[start:end]``: a varint's
    int, or ``(begin, stop)`` of a length-delimited field; raises _WireError unless the bytes are
    well-formed up to exactly ``end``."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise _WireError("a fixed-width field runs past its message")
            value, pos = None, pos + size
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _WireError("a field runs past its message (truncated file)")
            value, pos = (pos, pos + length), pos + length
        else:
            raise _WireError(f"wire type {wire}")
        yield number, wire, value


def _text_of(buf: bytes, span: Any) -> str:
    if not isinstance(span, tuple):
        raise _WireError("a string field is not length-delimited")
    try:
        return buf[span[0] : span[1]].decode("utf-8")
    except UnicodeDecodeError:
        raise _WireError("a name is not UTF-8") from None


@dataclass
class OnnxFile:
    """What an ``.onnx`` file holds, read at the protobuf wire level (no ONNX Runtime, no onnx package)."""

    path: Path
    size_bytes: int
    ir_version: int
    producer: str
    opsets: dict[str, int]
    nodes: int
    op_types: list[str]
    outputs: list[str]
    output_ops: dict[str, str]  # graph output -> op_type that computes it (through Identity/Reshape/...)
    external_data: list[str]  # tensor data files the graph points at, relative to its folder

    def describe(self) -> str:
        ops = ", ".join(sorted(set(self.op_types))[:12])
        opset = self.opsets.get("", self.opsets.get("ai.onnx"))
        return f"ONNX IR {self.ir_version}, opset {opset}, {self.nodes} nodes ({ops}), {self.size_bytes:,} bytes" + (f", produced by {self.producer}" if self.producer else "")


def _onnx_node(buf: bytes, span: tuple[int, int]) -> tuple[list[str], list[str], str]:
    inputs: list[str] = []
    outputs: list[str] = []
    op = ""
    for number, wire, value in _wire_fields(buf, *span):
        if number in (1, 2) and wire == 2:
            (inputs if number == 1 else outputs).append(_text_of(buf, value))
        elif number == 4 and wire == 2:
            op = _text_of(buf, value)
        elif number == 5 and wire == 2:  # attributes (subgraphs of If/Loop included): well-formed
            list(_wire_fields(buf, *value))
    if not op:
        raise _WireError("a node without an op_type")
    return inputs, outputs, op


def _onnx_external(buf: bytes, span: tuple[int, int]) -> str | None:
    """The ``location`` of a TensorProto stored outside the file, else None."""
    location = None
    for number, wire, value in _wire_fields(buf, *span):
        if number == 13 and wire == 2:  # external_data: StringStringEntryProto (key, value)
            entry = {n: _text_of(buf, v) for n, w, v in _wire_fields(buf, *value) if w == 2}
            if entry.get(1) == "location":
                location = entry.get(2, "")
    return location


def scan_onnx(path: "str | Path") -> OnnxFile:
    """Check that ``path`` is a whole ONNX ModelProto and read what its graph holds.

    Raises a one-line RobustlabError for a file that is not one (truncated, garbage, another
    format), has no graph, or points at tensor data outside its own folder.
    """
    path = Path(path)
    fix = "re-export the model (torch.onnx.export / tf2onnx) and copy the whole file"
    try:
        size = path.stat().st_size
        if size > ONNX_MAX_BYTES:
            raise RobustlabError(f"is {size:,} bytes, over protobuf's 2 GiB limit for one .onnx file", thing=path, fix="export the weights as ONNX external data")
        buf = path.read_bytes()
    except OSError as exc:
        raise RobustlabError(f"cannot read ({exc.__class__.__name__})", thing=path, fix="check the file") from None
    ir_version, producer, opsets, graph = 0, "", {}, None
    try:
        for number, wire, value in _wire_fields(buf, 0, len(buf)):
            if number == 1 and wire == 0:
                ir_version = value
            elif number == 2 and wire == 2:
                producer = _text_of(buf, value)
            elif number == 7 and wire == 2:
                graph = value
            elif number == 8 and wire == 2:
                entry = {n: v for n, w, v in _wire_fields(buf, *value)}
                opsets[_text_of(buf, entry[1]) if 1 in entry else ""] = int(entry.get(2) or 0)
        if not ir_version or graph is None:
            raise _WireError("no ir_version or no graph")
        nodes: list[tuple[list[str], list[str], str]] = []
        outputs: list[str] = []
        external: list[str] = []
        for number, wire, value in _wire_fields(buf, *graph):
            if wire != 2:
                continue
            if number == 1:
                nodes.append(_onnx_node(buf, value))
            elif number == 5:
                location = _onnx_external(buf, value)
                if location is not None:
                    external.append(location)
            elif number == 12:
                names = [_text_of(buf, v) for n, w, v in _wire_fields(buf, *value) if n == 1 and w == 2]
                outputs.extend(names[:1])
            elif number in (11, 13):
                list(_wire_fields(buf, *value))
    except _WireError as exc:
        raise RobustlabError(f"is not a valid ONNX model ({exc})", thing=path, fix=fix) from None
    except (KeyError, TypeError):
        raise RobustlabError("is not a valid ONNX model (a malformed opset entry)", thing=path, fix=fix) from None
    for location in external:
        parts = Path(location).parts
        if not location or Path(location).is_absolute() or ".." in parts:
            raise RobustlabError(
                f"points at tensor data outside its folder ({location!r})",
                thing=path,
                fix="keep the ONNX external data files beside the model, named relative to it",
            )
    return OnnxFile(path, size, ir_version, producer, opsets, len(nodes), [n[2] for n in nodes], outputs, _output_ops(nodes, outputs), external)


def _output_ops(nodes: list[tuple[list[str], list[str], str]], outputs: list[str]) -> dict[str, str]:
    """Graph output -> the op that computes it, looking through ops that keep its meaning."""
    producer = {out: (inputs, op) for inputs, outs, op in nodes for out in outs}
    found: dict[str, str] = {}
    for name in outputs:
        current, seen = name, set()
        while current in producer and current not in seen:
            seen.add(current)
            inputs, op = producer[current]
            if op not in _ONNX_PASS_THROUGH or not inputs:
                found[name] = op
                break
            current = inputs[0]
    return found
