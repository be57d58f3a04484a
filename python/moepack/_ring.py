"""A bounded ring of host buffers through which tensors reach a device.

Reads fill the host slots on worker threads (the GIL released) while the
main thread issues the host-to-device copies; a slot is read into again
only after the copy out of it has completed. Host memory stays at
``slots x slot_bytes`` however large a tensor is: each one is read in
windows (``Loader.chunks``; a window is larger than a slot only for a piece
computed whole, such as a block transposed from a fused-transposed source,
which is never cut: one expert's matrix at most).

The copy is a function ``copy(dst, src)`` of two flat uint8 torch tensors
(``dst`` a window of the target's storage on the device, ``src`` the
slot's bytes) that returns None once the copy is done, or an object whose
``synchronize()`` waits for it. The default copies asynchronously from
pinned memory and returns a CUDA event; tests swap in a CPU one.
"""

from concurrent.futures import ThreadPoolExecutor

from .errors import InvalidArgumentError


def _default_copy(torch):
    def copy(dst, src):
        if dst.device.type != "cuda":
            dst.copy_(src)
            return None
        dst.copy_(src, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return done

    return copy


class HostRing:
    """``slots`` host buffers of ``slot_bytes`` each; ``copy`` as above
    (default: asynchronous for CUDA); ``pin``: page-locked buffers (default:
    when the device is CUDA and CUDA is available)."""

    def __init__(self, slots=4, slot_bytes=16 << 20, copy=None, pin=None):
        for what, v in (("slots", slots), ("slot_bytes", slot_bytes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidArgumentError(f"{what} must be a positive int, got {v!r}")
        if copy is not None and not callable(copy):
            raise TypeError(f"copy must be callable, got {type(copy).__name__}")
        self.slots, self.slot_bytes, self.copy, self.pin = slots, slot_bytes, copy, pin
        self._bufs = []  # kept between fills: pinned memory is slow to allocate

    def _buffers(self, torch, count, size, pin):
        if len(self._bufs) < count or self._bufs[0].numel() < size or self._bufs[0].is_pinned() != pin:
            self._bufs = []  # the old ones go before the new ones come
            self._bufs = [torch.empty(size, dtype=torch.uint8, pin_memory=pin) for _ in range(count)]
        return self._bufs[:count]

    def fill(self, loader, jobs, torch, threads):
        """Reads each (index, dst) of `jobs` through the ring: `dst` is a
        flat uint8 view of the target's storage. Returns when every copy has
        completed."""
        windows = [(i, dst, b, e) for i, dst in jobs for b, e in loader.chunks(i, self.slot_bytes)]
        if not windows:
            return
        device = windows[0][1].device
        pin = self.pin if self.pin is not None else (device.type == "cuda" and torch.cuda.is_available())
        size = max(self.slot_bytes, max(e - b for _, _, b, e in windows))
        slots = self.slots
        bufs = self._buffers(torch, slots, size, pin)
        copy = self.copy or _default_copy(torch)
        fences = [None] * slots  # the copy that last read out of each slot

        def read(k):
            i, _, b, e = windows[k]
            s = k % slots
            if fences[s] is not None:
                fences[s].synchronize()
                fences[s] = None
            loader.read_range(i, b, bufs[s][:e - b].numpy())

        workers = max(1, min(threads, slots))
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                reads = {k: pool.submit(read, k) for k in range(min(slots, len(windows)))}
                try:
                    for k in range(len(windows)):
                        reads.pop(k).result()
                        _, dst, b, e = windows[k]
                        s = k % slots
                        fences[s] = copy(dst[b:e], bufs[s][:e - b])
                        if k + slots < len(windows):
                            reads[k + slots] = pool.submit(read, k + slots)
                finally:
                    for f in reads.values():
                        f.cancel()
        finally:
            for f in fences:  # also on error: no copy may still read a slot being freed
                if f is not None:
                    f.synchronize()
