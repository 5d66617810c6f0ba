"""Batches: uint8 training batches read ahead from the host (an array or a memmap) by a thread.

When the images are resident on the training device (they fit), a batch is one indexing op on
the device and nothing here runs in the background. When they stay on the host (a prepared
cache bigger than memory, a dataset that does not fit on the GPU beside the model, or
``data.on_device=never``), a background
thread gathers batch k+1 while the device trains on batch k:

* the indices are sorted before reading (rows of a memmap are then read in file order, which
  the OS reads ahead), and the rows put back in batch order (``index_copy_``), so a batch is
  exactly ``images[idx]``;
* the rows land in one of two reusable host buffers, pinned when the target is CUDA (a pinned
  buffer is copied asynchronously; pinning a new tensor each step would cost more than the
  copy), then go to the GPU ``non_blocking`` on a side stream; the training stream waits on an
  event for its copy, and a buffer is refilled only once its copy has finished.

The order of the batches is the order of the index batches given (a
:class:`~selfsup.train.loop.BatchStream` epoch, seeded per (seed, epoch, rank)): the thread only
reads ahead, so training and resuming are exactly as without it. Use it as a context manager;
leaving the block (normally or by an exception) stops and joins the thread. A batch on the CPU
target is a reusable buffer: valid until the next batch is asked for.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch


def free_device_memory(device: torch.device) -> int:
    """Bytes the CUDA ``device`` can still give this process: the driver's free memory plus
    what PyTorch's caching allocator holds reserved but unused (``mem_get_info`` alone counts
    those cached blocks as taken)."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


@dataclass
class _Buffer:
    """One reusable host buffer, and the event of the last copy out of it (CUDA target)."""

    host: torch.Tensor | None = None
    copied: torch.cuda.Event | None = None


_DONE = object()


class Batches:
    """The uint8 batches ``images[idx]`` for each ``idx`` of ``index_batches``, in order, on
    ``device`` (see the module docstring).

    Args:
        images: uint8 (N, C, H, W): a tensor (host or device), or a numpy array / memmap.
        index_batches: int64 index tensors, one per batch.
        device: where the batches are wanted.
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        index_batches: Iterable[torch.Tensor],
        device: torch.device | str,
    ) -> None:
        if isinstance(images, np.ndarray):
            with warnings.catch_warnings():  # a read-only memmap: only ever read here
                warnings.simplefilter("ignore", UserWarning)
                images = torch.from_numpy(images)
        self.images, self.index_batches = images, index_batches
        self._array = images.numpy() if images.device.type == "cpu" else None
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._free: queue.Queue[_Buffer | None] = queue.Queue()
        self._ready: queue.Queue[object] = queue.Queue()
        self._stream: torch.cuda.Stream | None = None  # the copy stream, made when reading
        self.buffers = [_Buffer(), _Buffer()]
        """The two reusable host buffers (filled once the reading starts)."""

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the reading thread and wait for it (it finishes the batch it is reading)."""
        self._stop.set()
        if self._thread is not None:
            self._free.put(None)  # wakes a thread waiting for a free buffer
            self._thread.join()
            self._thread = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.images.device.type != "cpu":  # resident on the device: nothing to read ahead
            for idx in self.index_batches:
                yield self.images[idx.to(self.images.device)].to(self.device, non_blocking=True)
            return
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError("a Batches object is iterated once")
        for buffer in self.buffers:
            self._free.put(buffer)
        if self._cuda:
            self._stream = torch.cuda.Stream(self.device)
        self._thread = threading.Thread(target=self._read, name="selfsup-batches", daemon=True)
        self._thread.start()
        held: _Buffer | None = None
        try:
            while True:
                if held is not None:  # asking for the next batch: the previous one is done
                    self._free.put(held)
                item = self._ready.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                held, batch = item  # type: ignore[misc]
                if self._cuda:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(held.copied)
                    batch.record_stream(current)  # its memory is the copy stream's allocation
                yield batch
        finally:
            self.close()

    def _read(self) -> None:
        """The thread: gather each batch into a free buffer, hand it over; an exception is
        handed over too, to be raised where the batches are used."""
        try:
            scratch = None
            for idx in self.index_batches:
                buffer = self._free.get()
                if buffer is None or self._stop.is_set():
                    return
                idx = idx.cpu()
                shape = (len(idx), *self.images.shape[1:])
                if buffer.host is None or buffer.host.shape != shape:
                    buffer.host = torch.empty(shape, dtype=torch.uint8, pin_memory=self._cuda)
                if scratch is None or scratch.shape != shape:
                    scratch = torch.empty(shape, dtype=torch.uint8)
                if buffer.copied is not None:
                    buffer.copied.synchronize()  # its last copy to the GPU has finished
                # numpy, not torch: a torch op in this thread starts a second OpenMP team,
                # whose threads spin on the cores the training step is using (on a 2-core
                # CPU that made every epoch of the demo recipe 30% longer)
                order = np.argsort(idx.numpy(), kind="stable")
                np.take(self._array, idx.numpy()[order], axis=0, out=scratch.numpy())
                buffer.host.numpy()[order] = scratch.numpy()  # back in batch order
                self._ready.put((buffer, self._to_device(buffer)))
            self._ready.put(_DONE)
        except BaseException as e:  # re-raised in the consuming thread
            self._ready.put(e)

    def _to_device(self, buffer: _Buffer) -> torch.Tensor:
        assert buffer.host is not None
        if not self._cuda:
            return buffer.host
        assert self._stream is not None
        with torch.cuda.stream(self._stream):
            batch = buffer.host.to(self.device, non_blocking=True)
            buffer.copied = torch.cuda.Event()
            buffer.copied.record(self._stream)
        return batch
