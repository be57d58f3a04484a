"""The streaming converter protocol, for loaders that see one tensor at a time.

    conv = moepack.StreamingConverter(config="path/to/model")   # or config={...}
    for name, tensor in my_own_reader():
        if conv.can_handle(name):
            for out_name, out in conv.convert(name, tensor):
                use(out_name, out)
        else:
            use(conv.rename(name), tensor)
    conv.finalize()   # raises CorruptCheckpointError naming what never completed

Any object with callable ``can_handle(name)``, ``convert(name, tensor)`` and
``finalize()`` implements the protocol (``rename(name)`` is optional) and can
be given to ``moepack.load(..., converter=obj)``.
"""

import json
import os

from . import _dtypes, _moepack
from .errors import InvalidArgumentError

PROTOCOL = ("can_handle", "convert", "finalize")


def check_converter(obj):
    """Raises TypeError naming every protocol method that ``obj`` lacks or
    that is not callable."""
    problems = []
    for method in PROTOCOL:
        try:
            attr = getattr(obj, method)
        except AttributeError:
            problems.append(f"{method} is missing")
            continue
        if not callable(attr):
            problems.append(f"{method} is not callable ({type(attr).__name__})")
    if problems:
        raise TypeError(f"converter {type(obj).__name__!s} does not implement the streaming protocol: "
                        + "; ".join(problems) + " (needs can_handle(name), convert(name, tensor), finalize())")
    return obj


def _config_text(config):
    if config is None:
        raise InvalidArgumentError("StreamingConverter needs config= (a config.json path, a model directory or a dict)")
    if isinstance(config, dict):
        return json.dumps(config), "config"
    path = os.fspath(config)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        from .errors import FileError
        raise FileError(f"{path}: cannot read ({e.strerror})") from None
    return text.decode("utf-8", errors="surrogateescape"), path


def _torch_or_none():
    try:
        import torch
        return torch
    except ImportError:
        return None


class StreamingConverter:
    """moepack's converter for tensors that arrive one at a time, in any order.

    ``model_type`` picks a built-in family (default: from the config),
    ``rules`` a rule file instead; ``config`` is a config.json path, a model
    directory or a dict (it gives the expert counts); ``to`` is "fused" or
    "per-expert". ``convert`` returns the tensors a call completes: [] until
    the last expert of a fused tensor arrives, then [(fused_name, tensor)];
    to per-expert, every expert of a fused tensor at once. Outputs are torch
    tensors for torch inputs and numpy storage arrays for numpy inputs.

    ``dtype`` ("bf16", "f16", "f32" or the torch dtype) dequantizes FP8
    block-scaled and MXFP4 weights: each is held until its scales arrive
    (or the scales until the weight does) and comes out as one tensor of
    that dtype; the scales are consumed.

    Not thread-safe: one converter per loading thread.
    """

    def __init__(self, model_type=None, config=None, rules=None, to="fused", source_layout=None, dtype=None):
        from ._api import dtype_name
        text, what = _config_text(config)
        self._c = _moepack.StreamingConverter(model_type or "", "" if rules is None else os.fspath(rules), text, what,
                                              to, source_layout, dtype_name(dtype))

    @property
    def family(self):
        return self._c.family

    @property
    def pending_bytes(self):
        """Bytes held for fused tensors still waiting for experts."""
        return self._c.pending_bytes

    def can_handle(self, name):
        return self._c.can_handle(name)

    def rename(self, name):
        """The output name of a tensor that passes through unchanged."""
        return self._c.rename(name)

    def convert(self, name, tensor, dtype=None):
        """``dtype``: the safetensors dtype name, needed only for numpy
        arrays of types numpy lacks (bf16 given as uint16: dtype="BF16")."""
        torch = _torch_or_none() if _dtypes.is_torch_tensor(tensor) else None
        name_of = dtype or _dtypes.dtype_name_of(tensor)
        shape, data = _dtypes.as_bytes(tensor, torch)
        self._torch = torch
        return self._wrap(self._c.convert(name, name_of, list(shape), data.reshape(-1).view("uint8")), torch)

    def finalize(self):
        """Raises CorruptCheckpointError listing every conversion left
        incomplete (layer, projection, the experts that arrived); returns []
        otherwise, every finished tensor having been returned by convert."""
        return self._wrap(self._c.finalize(), getattr(self, "_torch", None))

    @staticmethod
    def _wrap(items, torch):
        out = []
        for name, dtype, shape, data in items:
            arr = _dtypes.from_bytes(data, dtype, shape)
            out.append((name, _dtypes.to_torch(arr, dtype, torch) if torch is not None else arr))
        return out
