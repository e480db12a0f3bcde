"""A SavedModel's graphs are code: every op of every MetaGraph and library function checked against an allow-list before loading (file I/O, Python calls, printing to files and the like are refused without --trust-model).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from robustlab.errors import RobustlabError

# --------------------------------------------------------------------------- SavedModel graphs

# A SavedModel graph is code: its ops run when the serving function is called. Allowed without
# --trust-model: ops TensorFlow registers as stateless (pure functions of their inputs), minus
# _GRAPH_DENIED, plus the stateful ops in _GRAPH_STATEFUL_OK; checkpoint ops only in the
# functions the SavedModel's saver runs (restoring variables/ is how every SavedModel loads).
_GRAPH_STATEFUL_OK = {
    # variables and resources
    "VarHandleOp", "ReadVariableOp", "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp",
    "VarIsInitializedOp", "DestroyResourceOp", "DisableCopyOnRead", "ResourceGather", "ResourceGatherNd",
    "VariableV2", "Variable", "Assign", "AssignAdd", "AssignSub", "IsVariableInitialized",
    # calls and control flow (the functions they call are scanned too)
    "StatefulPartitionedCall", "PartitionedCall", "While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase",
    "NoOp", "Placeholder", "PlaceholderWithDefault", "Assert", "CheckNumerics", "CheckNumericsV2",
    # random numbers (dropout, augmentation layers)
    "RandomUniform", "RandomUniformInt", "RandomStandardNormal", "TruncatedNormal", "RandomShuffle",
    "StatefulUniform", "StatefulUniformInt", "StatefulStandardNormalV2", "StatefulTruncatedNormal", "RngReadAndSkip",
    "RngSkip", "RandomGammaGrad", "RandomGamma", "RandomPoisson", "RandomPoissonV2", "Multinomial",
    # lookup tables (StringLookup, IntegerLookup preprocessing)
    "HashTable", "HashTableV2", "MutableHashTableV2", "MutableDenseHashTableV2", "LookupTableFindV2",
    "LookupTableInsertV2", "LookupTableSizeV2", "LookupTableImportV2", "LookupTableExportV2", "AnonymousHashTable",
    "InitializeTableV2", "LookupTableRemoveV2",
}  # fmt: skip
_GRAPH_CHECKPOINT = {"SaveV2", "RestoreV2", "MergeV2Checkpoints", "Save", "SaveSlices", "Restore", "RestoreSlice", "ShardedFilename", "ShardedFilespec"}
_GRAPH_DENIED = {
    "ReadFile": "reads a file", "WriteFile": "writes a file", "MatchingFiles": "lists files", "ImmutableConst": "maps a file into memory",
    "PyFunc": "runs Python code", "PyFuncStateless": "runs Python code", "EagerPyFunc": "runs Python code",
    "InitializeTableFromTextFile": "reads a file", "InitializeTableFromTextFileV2": "reads a file",
    "DecodeProtoV2": "reads protobuf descriptors from files", "LoadAndRemapMatrix": "reads a checkpoint",
    "DebugIdentity": "writes debug dumps", "DebugIdentityV2": "writes debug dumps", "DebugIdentityV3": "writes debug dumps",
}  # fmt: skip
_GRAPH_DENIED_WORDS = re.compile(r"(File|Record|Reader|Dataset|Iterator|Summary|Rpc|Socket|Checkpoint|Snapshot)")
_PRINT_STREAMS = {"stderr", "stdout", "log(info)", "log(warning)", "log(error)"}


@dataclass(frozen=True)
class GraphOp:
    """An op a SavedModel graph would run that is outside the allow-list."""

    op: str
    node: str
    function: str  # the function that holds it, or "the main graph"
    why: str


def _called_functions(node: Any) -> set[str]:
    """Names of the library functions a NodeDef calls (``f``, ``body``, ``then_branch``... attrs)."""
    names = set()
    for attr in node.attr.values():
        if attr.func.name:
            names.add(attr.func.name)
        names.update(f.name for f in attr.list.func)
    return names


def _saver_functions(meta: Any, library: Mapping[str, Any]) -> set[str]:
    """The functions the saver of a MetaGraph runs (save and restore), and all they call."""
    saver = meta.saver_def
    roots = {saver.restore_op_name.split(":")[0], saver.save_tensor_name.split(":")[0]} - {""}
    todo = [name for n in meta.graph_def.node if n.name in roots for name in _called_functions(n)]
    found: set[str] = set()
    while todo:
        name = todo.pop()
        if name in found or name not in library:
            continue
        found.add(name)
        todo.extend(c for n in library[name].node_def for c in _called_functions(n))
    return found


def _op_verdict(node: Any, in_saver: bool) -> str | None:
    """None when the op may run without trust, else why not."""
    from tensorflow.python.framework import op_def_registry

    op = node.op
    if op in _GRAPH_STATEFUL_OK:
        return None
    if op in _GRAPH_CHECKPOINT:
        return None if in_saver else "reads or writes checkpoint files outside the variables restore"
    if op in _GRAPH_DENIED:
        return _GRAPH_DENIED[op]
    if op == "PrintV2":
        stream = node.attr["output_stream"].s.decode("utf-8", "replace") if "output_stream" in node.attr else "stderr"
        return None if stream in _PRINT_STREAMS else f"prints to {stream[:60]!r}"
    if _GRAPH_DENIED_WORDS.search(op):
        return "does input/output"
    op_def = op_def_registry.get(op)
    if op_def is None:
        return "is not an op this TensorFlow knows (a custom op library)"
    if op_def.is_stateful:
        return "is a stateful op outside the allow-list"
    return None


def scan_saved_model_graph(path: "str | Path") -> list[GraphOp]:
    """The ops in a SavedModel folder's graphs (every MetaGraph, the main graph and all library
    functions) that are outside the allow-list, read statically from ``saved_model.pb``."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(path)
    pb = path / "saved_model.pb"
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(pb.read_bytes())
    except OSError as exc:
        raise RobustlabError(f"cannot read saved_model.pb ({exc.__class__.__name__})", thing=pb, fix="check the folder and its permissions") from None
    except (DecodeError, RuntimeWarning, ValueError):
        raise RobustlabError("saved_model.pb is not a readable SavedModel protobuf (truncated or corrupt)", thing=pb, fix="export the model again") from None
    found: list[GraphOp] = []
    for meta in saved.meta_graphs:
        library = {f.signature.name: f for f in meta.graph_def.library.function}
        saver = _saver_functions(meta, library)
        holders = [("the main graph", meta.graph_def.node)] + [(name, f.node_def) for name, f in library.items()]
        for where, nodes in holders:
            for node in nodes:
                why = _op_verdict(node, where in saver)
                if why is not None:
                    found.append(GraphOp(node.op, node.name, where, why))
    return found
