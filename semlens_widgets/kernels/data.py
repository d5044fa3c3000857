"""DataLoader plumbing for the passes over a dataset: global sample indices and item formats.

Items are a Tensor ``[C, H, W]``, a tuple/list ``(x, y, ...)`` whose first element is the image
tensor, or a dict with the image under one of :data:`IMAGE_KEYS` (label under one of
:data:`LABEL_KEYS`). Global sample indices travel with every item: the dataset is wrapped so
that item i yields ``(i, item)``, so any sampler, shuffling, shard or number of workers keeps
them aligned.

Pure torch: no disk, no UI.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset
from torch.utils.data.dataloader import default_collate

from .hooks import describe_value

__all__ = [
    "IMAGE_KEYS",
    "LABEL_KEYS",
    "ACCEPTED_ITEMS",
    "split_batch",
    "check_item",
    "check_same_size",
    "SAME_SIZE",
    "build_loader",
    "labels_from",
    "uses_default_collate",
]

IMAGE_KEYS = ("image", "pixel_values", "x")
LABEL_KEYS = ("label", "y")

SAME_SIZE = (
    "all images must share one size [C, H, W] (resize them in the dataset's transform, e.g. "
    "torchvision.transforms.Resize(S) + CenterCrop(S))"
)

ACCEPTED_ITEMS = (
    "a Tensor [C,H,W]; a tuple/list (x, y, ...) whose first element is the image tensor; or a "
    f"dict with the image under one of {list(IMAGE_KEYS)} (label under one of {list(LABEL_KEYS)})"
)


class _Indexed(Dataset):
    """Wraps a map-style dataset so that item i is ``(i, dataset[i])``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return i, self.dataset[i]


class _IndexedCollate:
    """Collates ``[(i, item), ...]`` into ``(LongTensor[B] indices, collate_fn(items))``."""

    def __init__(self, collate_fn: Callable[[list], Any] | None):
        self.collate_fn = collate_fn if collate_fn is not None else default_collate

    def __call__(self, batch: list) -> tuple[torch.Tensor, Any]:
        idx = torch.tensor([b[0] for b in batch], dtype=torch.long)
        items = [b[1] for b in batch]
        try:
            return idx, self.collate_fn(items)
        except RuntimeError:
            if self.collate_fn is default_collate:
                check_same_size(idx.tolist(), items)  # raises naming the items when sizes differ
            raise


def split_batch(batch: Any, *, what: str = "batch") -> tuple[Any, Any]:
    """Split a dataset item or collated batch into ``(x, y)``; y is None when absent.

    Accepts a tensor, a tuple/list ``(x, y, ...)`` or a dict with the image under one of
    :data:`IMAGE_KEYS` and the label under one of :data:`LABEL_KEYS`. Raises TypeError naming
    what was found otherwise. Does not check ranks.
    """
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise TypeError(f"{what} is an empty {type(batch).__name__}; accepted items: {ACCEPTED_ITEMS}")
        return batch[0], batch[1] if len(batch) > 1 else None
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in IMAGE_KEYS if k in batch), None)
        if x is None:
            raise TypeError(
                f"{what} is a dict with keys {list(batch.keys())} but none of the image keys "
                f"{list(IMAGE_KEYS)}; accepted items: {ACCEPTED_ITEMS}"
            )
        y = next((batch[k] for k in LABEL_KEYS if k in batch), None)
        return x, y
    raise TypeError(f"{what} has no image tensor: got {describe_value(batch)}; accepted items: {ACCEPTED_ITEMS}")


def check_same_size(indices: list[int], items: list) -> None:
    """Raise ValueError naming the first item whose image size differs from the first one's
    (``default_collate`` would fail with a bare "stack expects each tensor to be equal size")."""
    shapes = []
    for i, item in zip(indices, items):
        x, _ = split_batch(item, what=f"dataset item {i}")
        shapes.append(tuple(x.shape) if isinstance(x, torch.Tensor) else None)
    for i, s in zip(indices, shapes):
        if s is not None and shapes[0] is not None and s != shapes[0]:
            raise ValueError(
                f"dataset item {i} has an image of shape {s} but item {indices[0]} has {shapes[0]}: "
                f"{SAME_SIZE}"
            )


def check_item(item: Any) -> None:
    """Check one dataset item: an image tensor of rank 3 ``[C, H, W]`` (else TypeError/ValueError)."""
    x, _ = split_batch(item, what="dataset item 0")
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"dataset item 0 has no image tensor: its image is a {type(x).__name__} "
            f"(convert it with a transform, e.g. torchvision.transforms.ToTensor()); "
            f"accepted items: {ACCEPTED_ITEMS}"
        )
    if x.dim() != 3:
        raise ValueError(
            f"dataset item 0 has an image tensor of shape {tuple(x.shape)} (rank {x.dim()}); "
            "expected rank 3, [C, H, W] per item (the DataLoader adds the batch dimension)"
        )


def build_loader(dataset_or_loader: Any, batch_size: int, num_workers: int,
                 indices: Sequence[int] | None = None, *, pin_memory: bool = False) -> tuple[DataLoader, Dataset]:
    """A DataLoader whose batches are ``(LongTensor[B] global indices, collated batch)``, and
    the original dataset.

    A dataset is read in order, or, with ``indices``, only the samples of that list in its
    order (a shard of a sharded run, the unvisited samples of a resumed pass): the indices stay
    global. ``indices`` needs a dataset, not a DataLoader (whose sampler decides the order).
    ``pin_memory``: a loader built from a dataset pins its batches (for asynchronous copies to
    a CUDA device).

    A DataLoader is rebuilt over the index-wrapped dataset with the same sampler /
    batch_sampler, batch_size, drop_last, num_workers, collate_fn, pin_memory and worker
    settings (``batch_size``/``num_workers`` are ignored then). A sharded run passes a loader
    whose sampler visits its shard (e.g. ``DistributedSampler(..., shuffle=False,
    drop_last=True)`` or a ``SubsetRandomSampler`` of the rank's indices): indices stay global.
    """
    if isinstance(dataset_or_loader, DataLoader):
        if indices is not None:
            raise TypeError(
                "a subset of the samples (a resumed or sharded pass) needs the dataset, not a "
                "DataLoader whose sampler decides the order; pass loader.dataset"
            )
        loader = dataset_or_loader
        dataset = loader.dataset
        if isinstance(dataset, IterableDataset):
            raise TypeError(
                "collect_topm needs a map-style dataset (with __len__ and __getitem__) so that "
                "every sample has a global index; got a DataLoader over an IterableDataset"
            )
        if loader.batch_size is None and loader.batch_sampler is None:
            raise ValueError(
                "collect_topm needs a DataLoader with automatic batching (batch_size or "
                "batch_sampler set); got batch_size=None"
            )
        kwargs: dict[str, Any] = dict(
            num_workers=loader.num_workers,
            collate_fn=_IndexedCollate(loader.collate_fn),
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            generator=loader.generator,
            persistent_workers=loader.persistent_workers,
        )
        if loader.num_workers > 0:
            kwargs["prefetch_factor"] = loader.prefetch_factor
        # The (batch) sampler yields indices into the original dataset, which the wrapper
        # shares: re-iterating it keeps the user's order, shuffling and sharding.
        if type(loader.batch_sampler) is BatchSampler:
            kwargs.update(sampler=loader.sampler, batch_size=loader.batch_size, drop_last=loader.drop_last)
        else:
            kwargs.update(batch_sampler=loader.batch_sampler)
        return DataLoader(_Indexed(dataset), **kwargs), dataset
    if isinstance(dataset_or_loader, IterableDataset) or not hasattr(dataset_or_loader, "__getitem__"):
        raise TypeError(
            "collect_topm needs a map-style dataset (with __len__ and __getitem__) or a "
            f"DataLoader over one; got {type(dataset_or_loader).__name__}"
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    dataset = dataset_or_loader
    loader = DataLoader(
        _Indexed(dataset),
        batch_size=batch_size,
        shuffle=False,
        sampler=None if indices is None else list(indices),
        num_workers=num_workers,
        collate_fn=_IndexedCollate(None),
        pin_memory=bool(pin_memory),
    )
    return loader, dataset


def labels_from(y: Any, batch: int) -> torch.Tensor | None:
    """Integer labels [B] from a collated y, else None (e.g. masks, float targets, strings)."""
    if isinstance(y, torch.Tensor) and y.dim() == 1 and y.shape[0] == batch and not y.is_floating_point() \
            and not y.is_complex() and y.dtype != torch.bool:
        return y.long()
    return None


def uses_default_collate(loader: DataLoader) -> bool:
    """Whether a loader from :func:`build_loader` collates with torch's ``default_collate``
    (items then reach the model as they are, so the first one can be checked up front)."""
    collate = getattr(getattr(loader, "collate_fn", None), "collate_fn", None)
    return collate is default_collate
