"""Reading model files without running their code.

Everything here is static: it reads HDF5 attributes, zip members and JSON, and walks pickle opcodes,
but never deserializes a Keras object, unmarshals bytecode or imports a module named by a file.

* :func:`scan_model_file`: what a model file holds (format, who saved it, layers, Lambda layers with
  Python bytecode, classes that are not Keras built-ins, TensorFlow-op layers), or a one-line
  :class:`~robustlab.errors.RobustlabError` for a truncated / corrupt / weights-only file.
* :func:`scan_pickle`: the globals (``module.name``) a pickle would import, from its opcodes.
* :func:`read_label_binarizer`: a scikit-learn ``LabelBinarizer`` pickle read by a restricted
  unpickler that accepts only the classes such an object holds (numpy arrays and dtypes), and maps
  the LabelBinarizer itself onto a plain record: no scikit-learn code runs, whatever the trust.
* :func:`lambda_guard`: a ``Lambda`` subclass for ``custom_objects`` that refuses to deserialize a
  Python lambda unless trusted, or swaps in a function the spec named (``custom_objects``).
* :func:`file_weight_stats` / :func:`model_weight_stats`: count and checksums of the weight values in a
  file and in a loaded model, so that a half-loaded model (random weights) is never used.
"""
from __future__ import annotations

import io
import json
import pickle
import pickletools
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from robustlab.errors import RobustlabError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
TRUST_FIX = "pass --trust-model if you trust the file"
JOBLIB_FIX = "save the LabelBinarizer with pickle.dump(lb, open('label_transform.pkl', 'wb')), or set classes: in the spec"

# Layer classes that Keras 2 (tf-keras) files use and that are not in keras.layers / tf_keras.layers.
_KERAS_INTERNAL_CLASSES = {"Functional", "Sequential", "Model", "InputLayer", "TFOpLambda", "SlicingOpLambda", "TensorFlowOpLayer", "KerasLayer"}
_MODEL_CLASSES = {"Functional", "Sequential", "Model"}
# Archive members are read into memory: their declared sizes are checked first (zip bombs).
# (declared size limit, inflation ratio limit): JSON compresses ~10-50x, float weights hardly at
# all (Keras stores them uncompressed); only near-constant filler inflates ~1000x (deflate's maximum).
JSON_MEMBER = (64 * 2**20, 200)  # config.json / metadata.json: a large model's config is a few MB
WEIGHTS_MEMBER = (16 * 2**30, 900)  # model.weights.h5


# --------------------------------------------------------------------------- model files


@dataclass
class LambdaLayer:
    """A ``Lambda`` layer found in a model config."""

    name: str
    function: str  # "python lambda" | "function NAME (module M)"
    function_name: str | None  # NAME for a named function, None for a lambda
    bytecode: bool  # the file carries marshalled Python bytecode for it (function or output_shape)


@dataclass
class ModelFile:
    """What a model file holds, read without running any of it."""

    path: Path
    format: str  # keras | h5 | json | savedmodel
    size_bytes: int
    keras_version: str | None = None
    backend: str | None = None
    config: dict[str, Any] | None = field(default=None, repr=False)
    layer_count: int = 0  # all layers, nested models included
    top_layers: int = 0
    nested_models: list[str] = field(default_factory=list)
    lambdas: list[LambdaLayer] = field(default_factory=list)
    custom_classes: list[tuple[str, str]] = field(default_factory=list)  # (layer name, class[@module])
    tf_op_layers: list[str] = field(default_factory=list)  # "name: tf.math.truediv"
    other_code: list[str] = field(default_factory=list)  # bytecode found outside Lambda functions
    graph_ops: list["GraphOp"] = field(default_factory=list)  # SavedModel ops outside the allow-list
    has_weights: bool = True
    producer: str | None = None  # an ONNX file's producer_name (and IR version)

    @property
    def saved_by(self) -> str:
        if self.producer:
            return self.producer
        if not self.keras_version:
            return "unknown Keras version"
        major = self.keras_version.split(".")[0]
        what = " (Keras 2 / tf-keras)" if major == "2" else ""
        return f"Keras {self.keras_version}{what}" + (f", backend {self.backend}" if self.backend else "")

    def describe(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "size_bytes": self.size_bytes,
            "saved_by": self.saved_by,
            "keras_version": self.keras_version,
            "layers": self.layer_count,
            "nested_models": list(self.nested_models),
            "lambda_layers": [{"name": la.name, "function": la.function, "bytecode": la.bytecode} for la in self.lambdas],
            "custom_classes": [f"{n}: {c}" for n, c in self.custom_classes],
            "tf_op_layers": list(self.tf_op_layers),
            "other_code": list(self.other_code),
            "graph_ops": [f"{g.op} ({g.node} in {g.function}): {g.why}" for g in self.graph_ops],
        }


def _signature(path: Path, n: int = 8) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise RobustlabError(f"cannot read ({exc.__class__.__name__}: {exc.strerror or exc})", thing=path, fix="check the path and permissions") from None


def _open_h5(source: "Path | io.BytesIO", thing: Path, prefix: str = "") -> Any:
    import h5py

    try:
        return h5py.File(source, "r")
    except OSError as exc:
        text = str(exc)
        m = re.search(r"eof = (\d+).*stored_eof = (\d+)", text)
        if m:
            have, want = int(m.group(1)), int(m.group(2))
            problem = f"truncated HDF5 file ({have:,} of {want:,} bytes)"
        elif "signature" in text.lower():
            problem = "not an HDF5 file"
        else:
            problem = "not a readable HDF5 file (" + " ".join(text.split())[:120] + ")"
        raise RobustlabError(prefix + problem, thing=thing, fix="download or copy the file again") from None


def _attr_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def scan_model_file(path: "str | Path", fmt: str) -> ModelFile:
    """What the model file at ``path`` (format ``fmt`` from :func:`detect_format`) holds.

    Raises a one-line RobustlabError for a truncated or corrupt file, an ``.h5`` that holds only
    weights, or a JSON that is not a Keras model config.
    """
    path = Path(path)
    if fmt == "python":  # a "module:function" scorer: no file; importing it is load_detector's, with trust
        return ModelFile(path=path, format=fmt, size_bytes=0, producer="a Python module (imported only with --trust-model)")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    mf = ModelFile(path=path, format=fmt, size_bytes=size)
    if fmt == "h5":
        if _signature(path) != HDF5_SIGNATURE:
            raise RobustlabError("cannot load model: not an HDF5 file (wrong signature)", thing=path, fix="give a Keras .h5 model, a .keras file, a SavedModel folder or an architecture .json")
        with _open_h5(path, path, prefix="cannot load model: ") as f:
            mf.keras_version = _attr_text(f.attrs.get("keras_version"))
            mf.backend = _attr_text(f.attrs.get("backend"))
            raw = f.attrs.get("model_config")
            if raw is None:
                mf.has_weights = "layer_names" in f.attrs or "layers" in f
                what = "only weights" if mf.has_weights else "no Keras model"
                raise RobustlabError(
                    f"holds {what}, no model architecture",
                    thing=path,
                    fix="give the architecture JSON as `model:` and this file as `weights:` (or pass --weights)",
                )
            mf.config = _parse_json(_attr_text(raw) or "", path)
    elif fmt == "keras":
        if _signature(path, 4) != ZIP_SIGNATURE:
            raise RobustlabError("cannot load model: not a .keras archive (not a zip file)", thing=path, fix="give a Keras 3 .keras file or a .h5 model")
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                for member in z.infolist():  # Keras inflates them all when it loads the file
                    _checked_member(member, path, *(JSON_MEMBER if member.filename.endswith(".json") else WEIGHTS_MEMBER))
                if "config.json" not in names:
                    raise RobustlabError("a .keras archive without config.json", thing=path, fix="save the model again with model.save('x.keras')")
                mf.config = _parse_json(_read_member(z, "config.json", path, *JSON_MEMBER).decode("utf-8", "replace"), path)
                if "metadata.json" in names:
                    meta = _parse_json(_read_member(z, "metadata.json", path, *JSON_MEMBER).decode("utf-8", "replace"), path)
                    mf.keras_version = _attr_text(meta.get("keras_version"))
                mf.has_weights = "model.weights.h5" in names or "model.weights.npz" in names
        except zipfile.BadZipFile:
            raise RobustlabError("cannot load model: truncated or corrupt .keras archive (bad zip file)", thing=path, fix="download or copy the file again") from None
        if not mf.has_weights:  # Keras would build it with random weights
            raise RobustlabError("cannot load model: a .keras archive without model.weights.h5 (no weights)", thing=path, fix="save the trained model again with model.save('x.keras')")
    elif fmt == "json":
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RobustlabError(f"cannot read ({exc.__class__.__name__})", thing=path, fix="check the file") from None
        mf.config = _parse_json(text, path)
        mf.keras_version = _attr_text(mf.config.get("keras_version"))
        mf.backend = _attr_text(mf.config.get("backend"))
        mf.has_weights = False
    elif fmt == "savedmodel":
        mf.graph_ops = scan_saved_model_graph(path)
        return mf
    elif fmt == "onnx":
        onnx_file = scan_onnx(path)
        mf.producer = f"{onnx_file.producer or 'an unknown producer'} (ONNX IR {onnx_file.ir_version})"
        mf.layer_count = mf.top_layers = onnx_file.nodes
        return mf
    if mf.config is not None:
        if not isinstance(mf.config, Mapping) or "class_name" not in mf.config:
            raise RobustlabError("is not a Keras model config (no class_name)", thing=path, fix="give a file written by model.to_json() or model.save()")
        try:
            _walk_model(mf.config, mf, top=True)
        except RecursionError:
            raise RobustlabError("the model config is nested too deeply to be a Keras model", thing=path, fix="give a file written by model.save() or model.to_json()") from None
    return mf


def _read_member(z: zipfile.ZipFile, name: str, thing: Path, limit: int, max_ratio: int) -> bytes:
    """The bytes of archive member ``name``, after checking the size it declares against ``limit``
    and its inflation (declared / compressed size, members over 1 MiB) against ``max_ratio``: a zip
    bomb is refused before anything is inflated, and no more than the declared size is read."""
    info = _checked_member(z.getinfo(name), thing, limit, max_ratio)
    with z.open(info) as fh:  # reads at most file_size bytes, and checks the CRC
        return fh.read()


def _checked_member(info: zipfile.ZipInfo, thing: Path, limit: int, max_ratio: int) -> zipfile.ZipInfo:
    """``info`` unless its declared size or inflation is over the limits (see :func:`_read_member`)."""
    name = info.filename
    ratio = info.file_size / max(1, info.compress_size)
    if info.file_size > limit or (info.file_size > 2**20 and ratio > max_ratio):
        raise RobustlabError(
            f"archive member {name} would inflate to {info.file_size:,} bytes ({ratio:,.0f}x its {info.compress_size:,} compressed bytes): "
            f"refused as a zip bomb (limit {limit:,} bytes, {max_ratio}x)",
            thing=thing,
            fix="use a .keras file written by model.save(); do not load archives from untrusted sources",
        )
    return info


def _parse_json(text: str, thing: Path) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except RecursionError:
        raise RobustlabError("JSON nested too deeply to be a model config", thing=thing, fix="give a file written by model.to_json()") from None
    except json.JSONDecodeError as exc:
        raise RobustlabError(f"not valid JSON (line {exc.lineno}, column {exc.colno}): truncated or not a model config", thing=thing, fix="give a file written by model.to_json()") from None
    if not isinstance(value, dict):
        raise RobustlabError("JSON is not an object", thing=thing, fix="give a file written by model.to_json()")
    return value


def _known_layer_class(name: str) -> bool:
    if name in _KERAS_INTERNAL_CLASSES:
        return True
    from robustlab._tf import import_tf

    import_tf()  # quietly, before keras pulls TensorFlow in
    import keras

    if isinstance(getattr(keras.layers, name, None), type):
        return True
    try:
        import tf_keras
    except ImportError:  # pragma: no cover - tf-keras is a dependency
        return False
    return isinstance(getattr(tf_keras.layers, name, None), type)


def _contains_bytecode(obj: Any) -> bool:
    """True if a (sub)config carries a serialized Python lambda (Keras 3 ``__lambda__``)."""
    if isinstance(obj, Mapping):
        if obj.get("class_name") == "__lambda__":
            return True
        return any(_contains_bytecode(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_contains_bytecode(v) for v in obj)
    return False


def _lambda_of(name: str, cfg: Mapping[str, Any]) -> LambdaLayer:
    fn = cfg.get("function")
    ftype = cfg.get("function_type")
    out_code = cfg.get("output_shape_type") == "lambda" or _contains_bytecode(cfg.get("output_shape"))
    if ftype == "lambda" or _contains_bytecode(fn):
        return LambdaLayer(name, "python lambda", None, True)
    fname = None
    module = cfg.get("module")
    if isinstance(fn, str):
        fname = fn
    elif isinstance(fn, Mapping):
        fname = str(fn.get("config") if isinstance(fn.get("config"), str) else fn.get("class_name"))
        module = fn.get("module", module)
    where = f" (module {module})" if module and module not in ("builtins",) else ""
    return LambdaLayer(name, f"function {fname}{where}", fname, out_code)


def _layer_list(cfg: Mapping[str, Any]) -> list[Any] | None:
    """The layers of a model config in any layout Keras reads: ``{"config": {"layers": [...]}}``
    (Functional, Sequential, Keras 3), or the Keras 1 / 2.0-2.2 Sequential ``{"config": [...]}``."""
    inner = cfg.get("config")
    if isinstance(inner, list):
        return inner
    if isinstance(inner, Mapping) and isinstance(inner.get("layers"), list):
        return inner["layers"]
    return None


_WRAPPED_KEYS = ("layer", "forward_layer", "backward_layer", "cell")  # TimeDistributed, Bidirectional, RNN


def _inner_layers(lcfg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Layers a wrapper layer holds in its config (TimeDistributed, Bidirectional, RNN cells)."""
    found = [lcfg[k] for k in _WRAPPED_KEYS if isinstance(lcfg.get(k), Mapping)]
    cells = lcfg.get("cells")
    if isinstance(cells, list):  # StackedRNNCells
        found.extend(c for c in cells if isinstance(c, Mapping))
    return found


def _walk_model(cfg: Mapping[str, Any], mf: ModelFile, *, top: bool) -> None:
    """Record the layers of the model config ``cfg`` in ``mf``; then look through the whole config
    for Lambda layers in places no layout above reaches, so none is hidden from :func:`check_code`."""
    layers = _layer_list(cfg)
    seen: set[int] = set()
    if layers is not None:
        if top:
            mf.top_layers = len(layers)
        _walk_layers(layers, mf, seen)
    for name, lcfg in _lambda_configs(cfg):
        if id(lcfg) not in seen:
            mf.lambdas.append(_lambda_of(name, lcfg))


def _walk_layers(layers: list[Any], mf: ModelFile, seen: set[int]) -> None:
    for layer in layers:
        if not isinstance(layer, Mapping):
            continue
        cls = str(layer.get("class_name", ""))
        lcfg = layer.get("config") if isinstance(layer.get("config"), Mapping) else {}
        name = str(lcfg.get("name") or layer.get("name") or cls)
        mf.layer_count += 1
        module = str(layer.get("module") or "")
        registered = str(layer.get("registered_name") or "")
        nested = _layer_list(layer)
        if cls == "Lambda":
            seen.add(id(lcfg))
            mf.lambdas.append(_lambda_of(name, lcfg))
        elif cls in ("TFOpLambda", "SlicingOpLambda"):
            mf.tf_op_layers.append(f"{name}: tf.{lcfg.get('function', '?')}")
        elif cls in _MODEL_CLASSES or nested is not None:
            mf.nested_models.append(name)
            _walk_layers(nested or [], mf, seen)
            continue
        elif ">" in registered or (module and not module.startswith(("keras", "tf_keras"))) or not _known_layer_class(cls):
            mf.custom_classes.append((name, cls + (f" from {module}" if module and not module.startswith(("keras", "tf_keras")) else "")))
        elif _contains_bytecode(lcfg):
            mf.other_code.append(f"{name} ({cls})")
        _walk_layers(_inner_layers(lcfg), mf, seen)


def _lambda_configs(obj: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every ``{"class_name": "Lambda", "config": {...}}`` anywhere in a JSON value: (name, config)."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, Mapping):
            inner = o.get("config")
            if o.get("class_name") == "Lambda" and isinstance(inner, Mapping):
                yield str(inner.get("name") or o.get("name") or "Lambda"), inner
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)


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


# --------------------------------------------------------------------------- refusing code


def check_code(mf: ModelFile, *, trusted: bool, substitutes: Mapping[str, Any], custom_names: set[str]) -> list[str]:
    """Refuse (RobustlabError) what would run code from the file without trust; return notes.

    ``substitutes``: Lambda layer name -> function the spec named (replaces the file's lambda);
    ``custom_names``: the names in the spec's ``custom_objects``.
    """
    notes: list[str] = []
    thing = mf.path
    for la in mf.lambdas:
        if la.name in substitutes:
            notes.append(f"Lambda layer {la.name}: replaced by {_ref_of(substitutes[la.name])} (the file's {la.function} is not run)")
            continue
        if la.function_name is not None and la.function_name in custom_names and not la.bytecode:
            notes.append(f"Lambda layer {la.name}: {la.function} from custom_objects")
            continue
        if la.function_name is not None and not la.bytecode:
            raise RobustlabError(
                f"Lambda layer {la.name!r} calls {la.function}, which is not in the file",
                thing=thing,
                fix=f"name it in the spec's custom_objects ({la.function_name}: module:attribute) and pass --trust-model",
            )
        if not trusted:
            raise RobustlabError(
                f"contains a Lambda layer {la.name!r} holding Python bytecode ({la.function}) that runs when the model is loaded",
                thing=thing,
                fix=f"{TRUST_FIX}, or replace it with a function you trust in the spec's custom_objects ({la.name}: module:attribute; for x[0] / x[1] use robustlab.layers:rescale_gap)",
            )
        notes.append(f"Lambda layer {la.name}: the file's Python bytecode runs (--trust-model)")
    unresolved = [(n, c) for n, c in mf.custom_classes if c.split(" ")[0] not in custom_names]
    if unresolved:
        n, c = unresolved[0]
        more = f" and {len(unresolved) - 1} more" if len(unresolved) > 1 else ""
        cls = c.split(" ")[0]
        raise RobustlabError(
            f"layer {n!r} is a custom class {c}{more}, not a Keras layer",
            thing=thing,
            fix=f"name it in the spec's custom_objects ({cls}: module:attribute) and pass --trust-model",
        )
    if mf.other_code:
        if not trusted:
            raise RobustlabError(f"layer {mf.other_code[0]} holds Python bytecode that runs when the model is loaded", thing=thing, fix=TRUST_FIX)
        notes.append(f"Python bytecode in {', '.join(mf.other_code)} runs (--trust-model)")
    if mf.graph_ops:
        g = mf.graph_ops[0]
        more = f" (and {len(mf.graph_ops) - 1} more)" if len(mf.graph_ops) > 1 else ""
        if not trusted:
            raise RobustlabError(
                f"SavedModel graph holds op {g.op} (node {g.node} in function {g.function}), which {g.why}{more}; a graph is code",
                thing=thing,
                fix=TRUST_FIX,
            )
        notes.append(f"SavedModel graph ops outside the allow-list run (--trust-model): {', '.join(sorted({o.op for o in mf.graph_ops}))}")
    if mf.tf_op_layers:
        notes.append(f"{len(mf.tf_op_layers)} TensorFlow-op layer(s) (named tf functions, no Python code)")
    return notes


def _ref_of(obj: Any) -> str:
    mod = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{mod}:{name}" if mod else str(name)


def lambda_guard(framework: Any, substitutes: Mapping[str, Any], trusted: bool, thing: "Path | None" = None) -> type:
    """A ``Lambda`` subclass to pass as ``custom_objects["Lambda"]`` to a legacy ``.h5`` loader.

    ``framework`` is the ``keras`` or ``tf_keras`` module. Deserializing a Lambda layer named in
    ``substitutes`` builds a plain Lambda around that function (the file's bytecode is never
    unmarshalled); a Python lambda from the file is deserialized only when ``trusted``. ``thing``:
    the model file, named in the error.
    """
    base = framework.layers.Lambda

    class GuardedLambda(base):  # type: ignore[misc, valid-type]
        @classmethod
        def from_config(cls, config: dict[str, Any], custom_objects: Any = None, **kwargs: Any) -> Any:
            name = config.get("name")
            if name in substitutes:
                keep = {k: config[k] for k in ("name", "trainable", "arguments") if k in config and config[k] is not None}
                return base(substitutes[name], **keep)
            fn = config.get("function")
            is_lambda = config.get("function_type") == "lambda" or _contains_bytecode(fn) or config.get("output_shape_type") == "lambda"
            if is_lambda and not trusted:
                raise RobustlabError(f"Lambda layer {name!r} holds Python bytecode that runs when the model is loaded", thing=thing, fix=TRUST_FIX)
            return base.from_config(config, custom_objects=custom_objects, **kwargs) if kwargs else base.from_config(config, custom_objects=custom_objects)

    GuardedLambda.__name__ = "Lambda"
    return GuardedLambda


def substitute_lambdas(config: dict[str, Any], substitutes: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A copy of a model config whose Lambda layers named in ``substitutes`` call those functions by name.

    Returns ``(config, custom_objects)`` for ``model_from_json``; used for ``.keras`` archives and
    architecture JSON, whose loaders check for bytecode before any ``custom_objects`` class is asked.
    """
    import copy

    cfg = copy.deepcopy(config)
    objects: dict[str, Any] = {}

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            inner = o.get("config")
            if o.get("class_name") == "Lambda" and isinstance(inner, dict) and inner.get("name") in substitutes:
                key = f"robustlab_substitute_{inner['name']}"
                objects[key] = substitutes[inner["name"]]
                inner["function"] = key
                if "function_type" in inner:
                    inner["function_type"] = "function"
                    inner["module"] = None
                inner["output_shape"] = None
                if "output_shape_type" in inner:
                    inner["output_shape_type"] = "raw"
                    inner["output_shape_module"] = None
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(cfg)
    return cfg, objects


# --------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WeightStats:
    """Floating-point weight values: how many arrays and values, their sum and sum of squares."""

    arrays: int
    values: int
    total: float
    squares: float

    def matches(self, other: "WeightStats") -> bool:
        if self.values != other.values:
            return False
        scale = max(1.0, abs(self.squares), abs(other.squares))
        return abs(self.total - other.total) <= 1e-5 * max(1.0, self.values**0.5) * scale**0.5 and abs(self.squares - other.squares) <= 1e-5 * scale


def _stats(arrays: Iterator[np.ndarray]) -> WeightStats:
    """Stats over floating-point arrays, one array in memory at a time."""
    n = v = 0
    total = squares = 0.0
    for a in arrays:
        if not np.issubdtype(a.dtype, np.floating):
            continue
        a64 = np.asarray(a, np.float64)
        n += 1
        v += int(a64.size)
        total += float(a64.sum())
        squares += float(np.square(a64).sum())
    return WeightStats(n, v, total, squares)


_SKIP_GROUPS = {"optimizer_weights", "optimizer", "_optimizer"}


def file_weight_stats(path: "str | Path", fmt: str) -> WeightStats | None:
    """Weight values stored in an ``.h5`` (model or weights) or ``.keras`` file; None if unknown."""
    import h5py

    path = Path(path)
    if fmt == "keras":
        try:
            with zipfile.ZipFile(path) as z:
                if "model.weights.h5" not in z.namelist():
                    return None
                data = io.BytesIO(_read_member(z, "model.weights.h5", path, *WEIGHTS_MEMBER))
        except zipfile.BadZipFile:
            raise RobustlabError("truncated or corrupt .keras archive (bad zip file)", thing=path, fix="download or copy the file again") from None
        f = _open_h5(data, path)
    else:
        if _signature(path) != HDF5_SIGNATURE:
            raise RobustlabError("not an HDF5 weights file", thing=path, fix="give the .h5 file written by model.save_weights()")
        f = _open_h5(path, path)
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        names: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if name.split("/")[0] not in _SKIP_GROUPS and isinstance(obj, h5py.Dataset) and obj.shape is not None and np.issubdtype(obj.dtype, np.floating):
                names.append(name)

        def arrays() -> Iterator[np.ndarray]:
            for name in names:
                try:
                    yield root[name][()]
                except OSError:
                    raise RobustlabError(f"weight array {name} cannot be read (truncated or corrupt file)", thing=path, fix="download or copy the file again") from None

        root.visititems(visit)
        return _stats(arrays())


def model_weight_stats(model: Any) -> WeightStats:
    """Weight values of a loaded Keras (3 or 2) model."""
    return _stats(np.asarray(w.numpy()) for w in model.weights)


# --------------------------------------------------------------------------- pickles

# What a pickled scikit-learn LabelBinarizer references (numpy 1 and 2, pickle protocols 0-5).
_LABEL_BINARIZER = {
    ("sklearn.preprocessing._label", "LabelBinarizer"),
    ("sklearn.preprocessing.label", "LabelBinarizer"),
}
_NUMPY_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
}


def scan_pickle(path: "str | Path") -> list[str]:
    """The globals (``module.name``) a pickle file references, read from its opcodes (nothing runs)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RobustlabError(f"cannot read ({exc.__class__.__name__})", thing=path, fix="check the path") from None
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"):
                strings.append(str(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = strings[-1] if strings else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                v = memo.get(int(arg))
                if isinstance(v, str):
                    strings.append(v)
            elif name == "STACK_GLOBAL":
                if len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                else:
                    found.append("?")
    except Exception as exc:  # noqa: BLE001 - any opcode error means a broken file
        if any(g.startswith("joblib.") for g in found):  # joblib writes raw array bytes after the pickle
            raise RobustlabError("is a joblib file, not a plain pickle", thing=path, fix=JOBLIB_FIX) from None
        raise RobustlabError(f"not a readable pickle ({exc.__class__.__name__}: {' '.join(str(exc).split())[:80]})", thing=path, fix="save the LabelBinarizer again with pickle.dump") from None
    seen: list[str] = []
    for g in found:
        if g not in seen:
            seen.append(g)
    return seen


@dataclass(frozen=True)
class LabelEncoding:
    """What a LabelBinarizer says: ``classes`` in its ``classes_`` order (sorted when fitted)."""

    classes: tuple[Any, ...]
    y_type: str | None
    pos_label: Any
    neg_label: Any


class _LabelBinarizerRecord:
    """Stands in for sklearn's LabelBinarizer while unpickling: keeps the state, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = state[0]
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("unexpected LabelBinarizer state")
        self.__dict__.update(state)


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    if cls is not _LabelBinarizerRecord or base is not object or state is not None:
        raise pickle.UnpicklingError("copyreg._reconstructor used for something else than a LabelBinarizer")
    return object.__new__(cls)


class _LabelBinarizerUnpickler(pickle.Unpickler):
    """Accepts only the classes a pickled LabelBinarizer holds."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _LABEL_BINARIZER:
            return _LabelBinarizerRecord
        if (module, name) in _NUMPY_ALLOWED:
            if name == "object":
                return object
            if name == "_reconstructor":
                return _reconstructor
            if module == "_codecs":
                import codecs

                return codecs.encode
            if module == "numpy":
                return getattr(np, name)
            import importlib

            for candidate in (module.replace("numpy.core.", "numpy._core."), module.replace("numpy._core.", "numpy.core.")):
                try:
                    return getattr(importlib.import_module(candidate), name)
                except (ImportError, AttributeError):
                    continue
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids")


def read_label_binarizer(path: "str | Path") -> LabelEncoding:
    """``classes_`` and friends of a pickled scikit-learn LabelBinarizer, read without running code.

    Anything else in the pickle (another class, a function, a joblib array wrapper) is refused
    with a one-line RobustlabError, even with --trust-model.
    """
    path = Path(path)
    globs = scan_pickle(path)
    if any(g.startswith("joblib.") for g in globs):
        raise RobustlabError("is a joblib file, not a plain pickle", thing=path, fix=JOBLIB_FIX)
    try:
        with open(path, "rb") as fh:
            obj = _LabelBinarizerUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        other = [g for g in globs if tuple(g.rsplit(".", 1)) not in _LABEL_BINARIZER | _NUMPY_ALLOWED]
        shown = ", ".join(other[:3]) if other else str(exc)
        raise RobustlabError(
            f"the pickle holds {shown}, not only a scikit-learn LabelBinarizer; robustlab never unpickles other classes",
            thing=path,
            fix="save just the LabelBinarizer (pickle.dump(lb, f)), or drop the file and set classes: in the spec",
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated or odd pickles
        raise RobustlabError(
            f"not a readable LabelBinarizer pickle ({exc.__class__.__name__}: {' '.join(str(exc).split())[:80]})",
            thing=path,
            fix="save the LabelBinarizer again with pickle.dump, or set classes: in the spec",
        ) from None
    if not isinstance(obj, _LabelBinarizerRecord) or not hasattr(obj, "classes_"):
        raise RobustlabError(
            f"holds a {type(obj).__name__}, not a fitted LabelBinarizer",
            thing=path,
            fix="save the fitted LabelBinarizer (pickle.dump(lb, f)), or set classes: in the spec",
        )
    classes = tuple(c.item() if hasattr(c, "item") else c for c in np.asarray(obj.classes_).reshape(-1))
    pos = getattr(obj, "pos_label", 1)
    neg = getattr(obj, "neg_label", 0)
    return LabelEncoding(classes, getattr(obj, "y_type_", None), pos.item() if hasattr(pos, "item") else pos, neg.item() if hasattr(neg, "item") else neg)


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
