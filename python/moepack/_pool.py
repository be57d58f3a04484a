"""Host buffers for the tensors ``moepack.load`` yields, reused once nothing
refers to them any more.

A fresh buffer costs a page fault per 4 KiB on first touch, which on the
benchmark machine is slower than the read itself. A buffer is handed out
again only when the pool holds its only reference: every tensor, array,
view or storage made from it holds one, so a buffer the caller still uses
(directly or through a view) is never overwritten. That count is exact in
CPython, which is the only interpreter the extension builds for.
"""

import sys

import numpy as np


class BufferPool:
    def __init__(self, keep=3):
        self._keep = keep  # free buffers kept for reuse
        self._bufs = []

    def _free(self, k):
        # Two references: the list's and getrefcount's argument.
        return sys.getrefcount(self._bufs[k]) == 2

    def take(self, nbytes):
        """A flat uint8 array of `nbytes` bytes: a free buffer's prefix (the
        smallest that fits) or a new one."""
        best = None
        for k in range(len(self._bufs)):
            size = self._bufs[k].nbytes
            if size >= nbytes and self._free(k) and (best is None or size < self._bufs[best].nbytes):
                best = k
        if best is not None:
            return self._bufs[best][:nbytes]
        buf = np.empty(nbytes, dtype=np.uint8)
        self._bufs.append(buf)
        self._trim()
        return buf

    def _trim(self):
        free = [k for k in range(len(self._bufs)) if self._free(k)]
        if len(free) <= self._keep:
            return
        free.sort(key=lambda k: self._bufs[k].nbytes)
        drop = set(free[:len(free) - self._keep])
        self._bufs = [b for k, b in enumerate(self._bufs) if k not in drop]
