"""The importable surface: `Index` with the tasks as methods. The CLI, the TUI and scripts use it.

    from clipsearch import Index

    index = Index.create("photos", model="ViT-B-32")
    index.add_folder("~/Pictures")
    for hit in index.search("a dog in the snow", k=5):
        print(hit.score, hit.uri)

    c10 = Index.create("c10", model="ViT-B-32")
    c10.add_dataset("cifar10", split="test", data_dir="~/data")
    c10.classify("cifar10")
    print(c10.evaluate_zero_shot("cifar10")["top1"])

Storage and search live in `index.index.Index` (the layer below the tasks); the tasks are
functions over an index (`tasks/`). This subclass only joins the two, so neither layer imports
the other the wrong way. `Index.create`/`open` build this class when called on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .index import index as storage
from .tasks import retrieval, zeroshot, zeroshot_eval


class Index(storage.Index):
    """An index folder (see `index.index.Index`) plus zero-shot classification and evaluations."""

    def info(self) -> dict[str, Any]:
        """What `clipsearch info NAME --json` prints (and `clipsearch serve`'s /api/info): the storage's info
        plus the index root folder."""
        return {**super().info(), "root": str(self.store.path.parent)}

    def classify(self, labels: str, templates: str | None = None) -> dict[str, int]:
        """Zero-shot label every image (zs_label/zs_score columns); returns counts per class."""
        return zeroshot.classify(self, labels, templates).counts

    def evaluate_zero_shot(
        self, labels: str | None = None, templates: Sequence[str] | None = None, split: str = "test"
    ) -> dict[str, Any]:
        """Top-1/top-5/mean per-class recall/per-class accuracy of zero-shot on a labelled split."""
        return zeroshot_eval.evaluate_zero_shot(self, labels, templates, split)[0]

    def evaluate_retrieval(self, split: str = "test", ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
        """Text→image and image→text recall@k, mean and median rank on a captioned split."""
        return retrieval.evaluate_retrieval(self, split, ks)
