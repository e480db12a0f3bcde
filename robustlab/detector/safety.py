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
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from robustlab.detector.graphscan import GraphOp, scan_saved_model_graph
from robustlab.detector.onnxfile import scan_onnx
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
