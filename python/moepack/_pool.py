"""Host buffers for the tensors ``moepack.load`` yields, reused once nothing
refers to them any more.

A fresh page costs a fault on first touch, which on the benchmark machine is
slower than the read itself, so what counts is how much memory is ever
touched. A ``param.copy_(t)`` loop holds the previous tensor while the next
is read, so two buffers alternate; each is grown in place (HostBuffer.grow:
the touched pages move with it) to the largest tensor it has held, rather
than a new buffer being made whenever a tensor does not fit a free one. A
small tensor is not put in a buffer far larger than itself: between two
large ones it would take the buffer the next large one needs, which then
has to grow another (on a 2-layer qwen3-30b-a3b the loop touched 1.61 GB
that way, 1.23 with small tensors kept apart, 0.84 with reading_order).

A buffer is handed out again only when the pool holds its only reference:
every tensor, array, view or storage made from it holds one, so a buffer the
caller still uses (directly or through a view) is never overwritten nor
grown. That count is exact in CPython, which is the only interpreter the
extension builds for.
"""

import sys
from collections import deque

import numpy as np

from . import _moepack


# A free buffer is used for a tensor it covers only if it is at most this
# many times the tensor's size, or at most SMALL bytes.
SPARE = 4
SMALL = 64 << 20


def reading_order(sizes):
    """The indices of `sizes` in their order, except that a tensor over
    SMALL bytes that would come straight after another waits until a small
    one has been read between them (small ones are taken early for that).
    A copy loop holds the previous tensor while the next is read; with a
    small one held each time a large one is read, all large ones share one
    buffer instead of alternating two (on a 2-layer qwen3-30b-a3b: 0.8 GB
    touched instead of 1.2 - 1.4)."""
    large = deque(i for i, n in enumerate(sizes) if n > SMALL)
    small = deque(i for i, n in enumerate(sizes) if n <= SMALL)
    order, after_large = [], False
    while large or small:
        if large and not after_large and (not small or large[0] < small[0]):
            order.append(large.popleft())
            after_large = True
        elif small:
            order.append(small.popleft())
            after_large = False
        else:  # no small one left to put between
            order.append(large.popleft())
    return order


class BufferPool:
    def __init__(self, keep=4):
        self._keep = keep  # free buffers kept for reuse (two large, two small)
        self._bufs = []    # [HostBuffer, bytes touched so far]
        self._touched = 0  # by every buffer the pool has made, dropped ones too

    def _free(self, entry):
        # Two references: the entry's and getrefcount's argument.
        return sys.getrefcount(entry[0]) == 2

    def take(self, nbytes):
        """A flat, writable uint8 array of `nbytes` bytes in a free buffer
        (of those that cover it and are not far larger, the smallest; else,
        of those smaller than it, the one touched most, grown) or in a new
        one."""
        free = [e for e in self._bufs if self._free(e)]
        fits = [e for e in free if nbytes <= e[1] <= max(SPARE * nbytes, SMALL)]
        smaller = [e for e in free if e[1] < nbytes]
        if fits:
            entry = min(fits, key=lambda e: e[1])
        elif smaller:
            entry = max(smaller, key=lambda e: e[1])
            entry[0].grow(nbytes)
        else:
            entry = [_moepack.HostBuffer(nbytes), 0]
            self._bufs.append(entry)
        self._touched += max(0, nbytes - entry[1])
        entry[1] = max(entry[1], nbytes)
        out = np.frombuffer(entry[0], dtype=np.uint8, count=nbytes)  # holds the buffer before the trim
        self._trim()
        return out

    def touched(self):
        """Bytes of fresh memory the pool has touched so far."""
        return self._touched

    def _trim(self):
        free = [e for e in self._bufs if self._free(e)]
        if len(free) <= self._keep:
            return
        free.sort(key=lambda e: e[1])
        drop = {id(e) for e in free[:len(free) - self._keep]}
        self._bufs = [e for e in self._bufs if id(e) not in drop]
