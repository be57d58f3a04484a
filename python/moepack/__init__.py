"""moepack: Mixture-of-Experts checkpoints between the Hub's per-expert layout
and the fused layout of transformers v5, from Python.

    moepack.inspect(path) -> dict
    moepack.convert(src, dst, to="fused", ...) -> dict
    moepack.verify(src, dst, ...) -> dict
    moepack.load(path, layout="fused", ep_rank=..., ep_size=..., tp_rank=..., tp_size=...)
        -> iterable of (name, torch.Tensor), each rank reading only its slice
    moepack.load_into(model_or_state_dict, path, ...)
        -> reads straight into existing parameters; a load_state_dict-like report
    moepack.StreamingConverter(config=..., to="fused")
        -> can_handle / convert / finalize for tensors arriving one at a time

See docs/python.md.
"""

from . import errors  # before the extension: it raises these classes
from .errors import (CorruptCheckpointError, Error, FileError, InvalidArgumentError, MismatchError,
                     NotFoundError)
from ._api import convert, families, inspect, parse_size, verify
from ._dtypes import numpy_dtype, torch_dtype
from ._load import LoadStream, load
from ._load_into import LoadResult, load_into
from ._ring import HostRing
from ._streaming import StreamingConverter, check_converter

__version__ = "0.1.0"

__all__ = [
    "CorruptCheckpointError", "Error", "FileError", "HostRing", "InvalidArgumentError", "LoadResult", "LoadStream",
    "MismatchError", "NotFoundError", "StreamingConverter", "check_converter", "convert", "errors", "families",
    "inspect", "load", "load_into", "numpy_dtype", "parse_size", "torch_dtype", "verify",
]
