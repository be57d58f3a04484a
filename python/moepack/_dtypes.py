"""safetensors dtypes as numpy and torch see them.

Every tensor is read into a numpy array of a *storage* dtype of the same
width (bf16 and the 8-bit floats have no numpy type: they are uint16 and
uint8 bit patterns), then handed to torch without a copy and reinterpreted
as the torch dtype. When the installed torch lacks a dtype (float8 types
before torch 2.1, uint16/32/64 before 2.3), the tensor keeps a same-width
integer dtype holding the exact bits: uint8 for the 8-bit floats, int16 /
int32 / int64 for the unsigned types. ``torch_dtype(name)`` tells which.
"""

import numpy as np

# name: (numpy storage dtype, torch dtype names to try in order)
_TABLE = {
    "BOOL": ("bool", ("bool",)),
    "U8": ("uint8", ("uint8",)),
    "I8": ("int8", ("int8",)),
    "I16": ("int16", ("int16",)),
    "U16": ("uint16", ("uint16", "int16")),
    "F16": ("float16", ("float16",)),
    "BF16": ("uint16", ("bfloat16",)),
    "I32": ("int32", ("int32",)),
    "U32": ("uint32", ("uint32", "int32")),
    "F32": ("float32", ("float32",)),
    "C64": ("complex64", ("complex64",)),
    "F64": ("float64", ("float64",)),
    "I64": ("int64", ("int64",)),
    "U64": ("uint64", ("uint64", "int64")),
    "F8_E4M3": ("uint8", ("float8_e4m3fn", "uint8")),
    "F8_E5M2": ("uint8", ("float8_e5m2", "uint8")),
    "F8_E4M3FNUZ": ("uint8", ("float8_e4m3fnuz", "uint8")),
    "F8_E5M2FNUZ": ("uint8", ("float8_e5m2fnuz", "uint8")),
    "F8_E8M0": ("uint8", ("float8_e8m0fnu", "uint8")),
    # Sub-byte types are packed: the last dim counts bytes, not elements.
    "F4": ("uint8", ("float4_e2m1fn_x2", "uint8")),
    "F6_E2M3": ("uint8", ("uint8",)),
    "F6_E3M2": ("uint8", ("uint8",)),
}

_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
         "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64, "F8_E4M3": 8, "F8_E5M2": 8,
         "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}

_SIGNED = {np.dtype("uint16"): np.dtype("int16"), np.dtype("uint32"): np.dtype("int32"),
           np.dtype("uint64"): np.dtype("int64")}


def _known(name):
    if name not in _TABLE:
        from .errors import InvalidArgumentError
        raise InvalidArgumentError(f"'{name}' is not a safetensors dtype")


def numpy_dtype(name):
    """The numpy dtype moepack stores a safetensors dtype in (bf16 -> uint16, F8_* -> uint8)."""
    _known(name)
    return np.dtype(_TABLE[name][0])


def torch_dtype(name, torch=None):
    """The torch dtype of a safetensors dtype name, or the same-width integer
    dtype holding its bits when this torch lacks it."""
    _known(name)
    if torch is None:
        import torch
    for attr in _TABLE[name][1]:
        t = getattr(torch, attr, None)
        if t is not None:
            return t
    raise TypeError(f"this torch has none of {_TABLE[name][1]} for {name}")


def storage_shape(name, shape):
    """The numpy shape holding a tensor: the shape itself, except for
    sub-byte dtypes whose last dim is given in bytes."""
    _known(name)
    shape = tuple(int(d) for d in shape)
    bits = _BITS[name]
    if bits % 8 == 0:
        return shape
    if not shape or (shape[-1] * bits) % 8:
        from .errors import InvalidArgumentError
        raise InvalidArgumentError(f"{name} {list(shape)} does not fill whole bytes in its last dim")
    return shape[:-1] + (shape[-1] * bits // 8,)


def to_torch(array, name, torch):
    """Wraps a numpy storage array as a torch tensor of the dtype (no copy)."""
    want = torch_dtype(name, torch)
    a = array.view(_SIGNED.get(array.dtype, array.dtype))  # torch < 2.3 has no uint16/32/64 numpy import
    t = torch.from_numpy(a)
    if t.dtype != want:
        t = t.view(want)
    return t


def flat_bytes(tensor, torch=None):
    """A flat uint8 view of a contiguous torch tensor's or numpy array's
    memory (a torch tensor for torch, on its device)."""
    if is_torch_tensor(tensor):
        flat = tensor.detach().reshape(-1)  # a view: the tensor is contiguous
        return flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)
    return tensor.reshape(-1).view(np.uint8)


def from_bytes(data, name, shape):
    """A numpy storage array over a 1-D uint8 array of a tensor's bytes (no copy)."""
    return data.view(numpy_dtype(name)).reshape(storage_shape(name, shape))


# Source side: which safetensors dtype a torch or numpy tensor is.
_NUMPY_NAMES = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16", "float16": "F16",
                "int32": "I32", "uint32": "U32", "float32": "F32", "complex64": "C64", "float64": "F64",
                "int64": "I64", "uint64": "U64"}
_TORCH_NAMES = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16", "float16": "F16",
                "bfloat16": "BF16", "int32": "I32", "uint32": "U32", "float32": "F32", "complex64": "C64",
                "float64": "F64", "int64": "I64", "uint64": "U64", "float8_e4m3fn": "F8_E4M3",
                "float8_e5m2": "F8_E5M2", "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ",
                "float8_e8m0fnu": "F8_E8M0"}
_INT_OF_WIDTH = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def is_torch_tensor(x):
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def dtype_name_of(tensor):
    """The safetensors dtype name of a torch tensor or numpy array."""
    if is_torch_tensor(tensor):
        key = str(tensor.dtype).replace("torch.", "")
        table = _TORCH_NAMES
    else:
        key = np.asarray(tensor).dtype.name
        table = _NUMPY_NAMES
    if key not in table:
        from .errors import InvalidArgumentError
        raise InvalidArgumentError(f"{key} has no safetensors dtype")
    return table[key]


def as_bytes(tensor, torch=None):
    """(shape, C-contiguous numpy array over the tensor's bytes); torch
    tensors are moved to the CPU first if needed. dtypes numpy lacks (bf16,
    float8) travel as same-width integers: only the bytes matter."""
    if is_torch_tensor(tensor):
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        if t.dtype != torch.bool and not t.is_complex():
            t = t.view(getattr(torch, _INT_OF_WIDTH[t.element_size()]))
        return tuple(tensor.shape), t.numpy()
    a = np.ascontiguousarray(tensor)
    return a.shape, a
