"""Validation of a training run: the numbers an index evaluation reports, on the val split.

The model is validated with the same code that scores an index: vectors from
`Encoder`'s own encode path on the live model, prototypes from
`zeroshot.class_prototypes`, text→image / image→text recall@k from
`retrieval.report_from_vectors` (what `eval retrieval` reports) and zero-shot
top-1 on seen and held-out classes from `zeroshot.zero_shot_accuracy` (the
numbers of `zeroshot.zero_shot_report`, what `eval zeroshot` reports), so the
same vectors give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ClipsearchError
from ..model.encoder import Encoder
from ..sources.images import ImageDecodeError, open_uri
from ..tasks.metrics import chance_recall
from ..tasks.retrieval import report_from_vectors
from ..tasks.zeroshot import class_prototypes, label_indices, zero_shot_accuracy
from .data import Example, TrainingData

RECALL_KS = (1, 5, 10)


def chance_levels(n_images: int, captions_per_image: np.ndarray | None, n_classes: int) -> dict[str, float]:
    """What a random ranking (recall@k) or a uniform guess (zero-shot top-1) scores on the same set.

    Text→image: k / n_images. Image→text: the chance that at least one of an
    image's c captions lands in the top k of all N captions, 1 - C(N-c, k)/C(N, k),
    averaged over the images that have captions.
    """
    chance: dict[str, float] = {}
    if captions_per_image is not None:
        c = np.asarray(captions_per_image, dtype=np.float64)
        t2i, i2t = chance_recall(n_images, 1, RECALL_KS), chance_recall(int(c.sum()), c, RECALL_KS)
        for k, text_to_image, image_to_text in zip(RECALL_KS, t2i, i2t):
            chance[f"t2i_R@{k}"], chance[f"i2t_R@{k}"] = float(text_to_image), float(image_to_text)
    if n_classes:
        chance.update({key: 1.0 / n_classes for key in ("zs_top1", "zs_seen_top1", "zs_heldout_top1")})
    return chance


def score_embeddings(
    image_ids: Sequence[str],
    image_vectors: np.ndarray,
    image_labels: Sequence[str | None],
    caption_image_ids: Sequence[str] | None,
    caption_vectors: np.ndarray | None,
    class_names: Sequence[str],
    prototypes: np.ndarray | None,
    heldout: Sequence[str] = (),
) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, chance levels) of unit image vectors against their captions and class prototypes.

    Retrieval and zero-shot go through the task functions of `eval retrieval` and
    `eval zeroshot` (see the module docstring).
    Metrics: t2i_R@k and i2t_R@k (k = 1, 5, 10) when there are captions;
    zs_top1, and with `heldout` classes zs_seen_top1 / zs_heldout_top1, when
    there are prototypes and labelled images.
    """
    values: dict[str, float] = {}
    captions_per_image = None
    if caption_vectors is not None and len(caption_vectors):
        report = report_from_vectors(image_ids, image_vectors, caption_image_ids, caption_vectors, RECALL_KS)
        for k in RECALL_KS:
            values[f"t2i_R@{k}"] = report["text_to_image"][f"R@{k}"]
            values[f"i2t_R@{k}"] = report["image_to_text"][f"R@{k}"]
        counts = {image_id: 0 for image_id in image_ids}
        for image_id in caption_image_ids:
            counts[image_id] += 1
        captions_per_image = np.array(list(counts.values()))
    labelled = prototypes is not None and bool((label_indices(list(image_labels), class_names) >= 0).any())
    if labelled:
        accuracy = zero_shot_accuracy(
            image_vectors, image_labels, class_names, prototypes, holdout=list(heldout) or None
        )
        values["zs_top1"] = accuracy["top1"]
        for key, part in (("zs_seen_top1", "seen"), ("zs_heldout_top1", "held_out")):
            if accuracy.get(part, {}).get("top1") is not None:
                values[key] = accuracy[part]["top1"]
    chance = chance_levels(len(image_ids), captions_per_image, len(class_names) if labelled else 0)
    return values, {key: value for key, value in chance.items() if key in values}


def selection_score(values: dict[str, float]) -> float | None:
    """What "best" means: mean of t2i and i2t R@5 with real captions, else zero-shot top-1."""
    if "t2i_R@5" in values:
        return (values["t2i_R@5"] + values["i2t_R@5"]) / 2
    return values.get("zs_top1")


def validation_metrics(encoder: Encoder, data: TrainingData, workers: int) -> tuple[dict[str, float], dict[str, float]]:
    """Embed the val split with `encoder` and score it (see `score_embeddings`)."""
    was_training = encoder.model.training
    encoder.model.eval()
    try:
        loader = DataLoader(
            ImageDataset(data.val, encoder.preprocess, encoder.image_size),
            batch_size=encoder.batch_size,
            num_workers=workers,
        )
        image_vectors = np.concatenate([encoder.encode_image_tensors(pixels) for pixels in loader])
        ids = [example.uri for example in data.val]
        caption_ids = caption_vectors = None
        if not data.captions_are_prompts:
            caption_ids = [example.uri for example in data.val for _ in example.captions]
            caption_vectors = encoder.encode_texts([caption for example in data.val for caption in example.captions])
        prototypes = class_prototypes(encoder, data.class_prompts) if data.class_names else None
        return score_embeddings(
            ids,
            image_vectors,
            [e.label for e in data.val],
            caption_ids,
            caption_vectors,
            data.class_names,
            prototypes,
            sorted(data.heldout),
        )
    finally:
        encoder.model.train(was_training)


def format_metrics(values: dict[str, float]) -> str:
    """One short log line, each group's numbers side by side so that an epoch line stays about 120 columns wide (it wrapped at 160):
    "t2i R@1/5/10 0.41/0.62/0.70  i2t R@1/5/10 0.38/0.60/0.71  zs top1 all/seen/heldout 0.52/0.60/0.21"."""
    groups: dict[str, list[tuple[str, float]]] = {}
    for key, value in values.items():
        if "_R@" in key:  # t2i_R@5: group "t2i R@", part "5"
            direction, k = key.split("_R@")
            groups.setdefault(f"{direction} R@", []).append((k, value))
        elif key == "zs_top1":
            groups.setdefault("zs top1 ", []).append(("all", value))
        elif key.startswith("zs_") and key.endswith("_top1"):  # zs_seen_top1: part "seen"
            groups.setdefault("zs top1 ", []).append((key[3:-5], value))
        else:
            groups[key] = [("", value)]
    return "  ".join(
        f"{name}{'/'.join(part for part, _ in parts)} {'/'.join(f'{value:.2f}' for _, value in parts)}"
        for name, parts in groups.items()
    )


class ImageDataset(Dataset):
    """Preprocessed pixels for validation: decoded exactly as the indexer decodes them."""

    def __init__(self, examples: Sequence[Example], preprocess: Callable, min_size: int):
        self.examples, self.preprocess, self.min_size = examples, preprocess, min_size

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            return self.preprocess(open_uri(self.examples[index].uri, min_size=self.min_size))
        except ImageDecodeError as err:
            raise ClipsearchError(f"cannot validate on {self.examples[index].uri}: {err}") from None
