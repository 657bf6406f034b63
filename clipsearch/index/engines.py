"""Where the images a sync must encode are decoded and encoded: in this process (`LocalEngine`)
or on a Ray cluster (`RayEngine`, Ray Data). Both yield the same stream of encoded batches,
which the driver alone writes (index/sync.py), so the store, its lock and resuming stay one path.

An encoded batch is a list of (position in the items, unit vector, (width, height), error):
a file that could not be read has no vector and no size, only its reason.

The Ray engine: the driver sends only (position, uri) rows; CPU tasks decode and preprocess
with the same guarded decoder and the same transform as the local engine; a pool of actors,
each loading the model once from its spec (never a pickled module), encodes; vectors stream
back to the driver (a Ray Client driver, `ray://`, pulls them from an actor that runs the
pipeline inside the cluster). `ray` is imported only when that engine runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from ..errors import ClipsearchError
from ..model.backends import backend_info, load_encoder
from ..model.interface import EncoderLike
from ..model.spec import ModelSpec
from ..sources.cifar import is_cifar_uri
from ..sources.images import ImageDecodeError, open_uri, time_limit
from ..sources.items import Item

Encoded = tuple[int, "np.ndarray | None", "tuple[int, int] | None", "str | None"]
ENGINES = ("local", "ray")
PATH_SAMPLE = 16  # item paths each Ray node is asked to see before the run


class Engine(Protocol):
    """Decodes and encodes items; `name` and `actors` go into the sync's summary."""

    name: str
    actors: int

    def label(self) -> str:
        """What the progress bar calls the encoding."""
        ...

    def encoded_batches(self, items: Sequence[Item], encoder: EncoderLike, batch_size: int) -> Iterator[list[Encoded]]:
        """Every item once, in batches, in any order."""
        ...


def encoding_engine(
    name: str = "local",
    ray_address: str | None = None,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    workers: int | None = None,
) -> Engine:
    """The engine a command names (`--engine`); the Ray options need `--engine ray`."""
    if name not in ENGINES:
        raise ClipsearchError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    if name == "local":
        if (ray_address, actors, gpus_per_actor) != (None, None, None):
            raise ClipsearchError("--ray-address, --actors and --gpus-per-actor need --engine ray")
        return LocalEngine(workers)
    return RayEngine(ray_address or "auto", actors or 1, gpus_per_actor or 0.0)


def decode_one(uri: str, preprocess: Callable, min_size: int) -> tuple[Any, tuple[int, int] | None, str | None]:
    """(pixels, original size, None), or (None, None, why): a bad file gives its reason, never an exception."""
    try:
        with time_limit():
            image = open_uri(uri, min_size=min_size)
            return preprocess(image), image.info.get("original_size", image.size), None
    except ImageDecodeError as err:
        return None, None, str(err)
    except Exception as err:  # a decoder bug on one file must not stop the run
        return None, None, f"decode failed: {type(err).__name__}: {err}".splitlines()[0]


def usable_cores() -> int:
    """The cores this process may use (a container or taskset may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)


def default_workers() -> int:
    # One per core, not one left to the encoder: a fast encoder leaves decoding the bottleneck. On 2 cores
    # (bench/bench_index.py, 2-12 MP JPEGs) 2 workers index 1.38x faster than 1 with OpenVINO int8, 1.06x with torch.
    return min(4, usable_cores())


# -- local -------------------------------------------------------------------
class _DecodeDataset:
    """Decode + preprocess in DataLoader workers (a map-style dataset: `len` and indexing)."""

    def __init__(self, items: Sequence[Item], preprocess: Callable, min_size: int):
        self.items, self.preprocess, self.min_size = items, preprocess, min_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Any, tuple[int, int] | None, str | None]:
        return index, *decode_one(self.items[index].uri, self.preprocess, self.min_size)


def decoded_batches(items: Sequence[Item], encoder: EncoderLike, batch_size: int, workers: int) -> Iterator[list]:
    """Batches of (position in items, pixels or None, original size, error or None), decoded by workers."""
    from torch.utils.data import DataLoader  # heavy: only when something is encoded

    return iter(
        DataLoader(
            _DecodeDataset(items, encoder.preprocess, encoder.image_size),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=list,  # a batch stays a list of tuples (failed decodes have no tensor)
            prefetch_factor=4 if workers else None,
            pin_memory=encoder.device.type == "cuda",
        )
    )


@dataclass
class LocalEngine:
    """DataLoader worker processes decode; the encoder in this process encodes."""

    workers: int | None = None  # decoding processes (None: default_workers())
    name: str = "local"
    actors: int = 0  # no actors: the encoder runs in this process

    def label(self) -> str:
        return "encoding"

    def encoded_batches(self, items: Sequence[Item], encoder: EncoderLike, batch_size: int) -> Iterator[list[Encoded]]:
        import torch  # heavy: only when pixels are encoded

        workers = default_workers() if self.workers is None else self.workers
        for batch in decoded_batches(items, encoder, batch_size, workers):
            good = [(i, pixels, size) for i, pixels, size, error in batch if error is None]
            vectors = (
                encoder.encode_image_tensors(torch.stack([torch.as_tensor(p) for _, p, _ in good])) if good else []
            )
            encoded: list[Encoded] = [(i, v, size, None) for (i, _, size), v in zip(good, vectors)]
            yield encoded + [(i, None, None, error) for i, _, _, error in batch if error is not None]


# -- Ray ---------------------------------------------------------------------
@dataclass
class RayEngine:
    """A Ray Data pipeline: CPU tasks decode + preprocess, `actors` encoder actors encode."""

    address: str = "auto"  # "auto" (a running cluster, else a local instance) or ray://HOST:PORT
    actors: int = 1
    gpus_per_actor: float = 0.0
    name: str = "ray"

    def label(self) -> str:
        return f"encoding on ray ({self.actors} actor{'s' * (self.actors != 1)})"

    def encoded_batches(self, items: Sequence[Item], encoder: EncoderLike, batch_size: int) -> Iterator[list[Encoded]]:
        ray = connect_ray(self.address)
        step = max(1, len(items) // PATH_SAMPLE)
        check_workers_see(sorted({p for p in (item_path(item.uri) for item in items[::step]) if os.path.exists(p)}))
        made = backend_info(encoder)  # the actors run exactly the backend the driver chose
        actor_args = dict(
            spec=encoder.spec.to_dict(), backend=made.get("backend", "torch"), precision=made.get("precision")
        )
        # One block is one decode task and one actor call; a small run is split so every actor gets work.
        rows = max(1, min(batch_size, -(-len(items) // (2 * self.actors))))
        uris = [item.uri for item in items]
        blocks = [
            pa.table({"position": np.arange(start, min(start + rows, len(uris))), "uri": uris[start : start + rows]})
            for start in range(0, len(uris), rows)
        ]
        stages = dict(preprocess=encoder.preprocess, side=encoder.image_size, actor_args=actor_args, rows=rows)
        stages.update(actors=self.actors, gpus_per_actor=self.gpus_per_actor)
        client = ray.util.client.ray.is_connected()  # Ray Client: Ray Data runs only inside the cluster
        batches = _pulled(ray, blocks, stages) if client else _encoded_stream(blocks, stages)
        # Ray prints a dead worker's notice on stdout, which carries results (`--json`): stderr while it runs.
        with contextlib.redirect_stdout(sys.stderr):
            try:
                for batch in batches:
                    yield _encoded_rows(batch)
            except Exception as err:  # a worker's failure arrives wrapped by Ray: one line for the user
                raise _one_line(err) from err


class PipelineRunner:
    """A Ray actor that runs the pipeline inside the cluster for a Ray Client driver, a batch per call."""

    def __init__(self, blocks: list[pa.Table], stages: dict[str, Any]):
        self.batches = _encoded_stream(blocks, stages)

    def next_batch(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def _pulled(ray: Any, blocks: list[pa.Table], stages: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    runner = ray.remote(num_cpus=0)(PipelineRunner).remote(blocks, stages)
    try:
        while (batch := ray.get(runner.next_batch.remote())) is not None:
            yield batch
    finally:
        ray.kill(runner)


def _encoded_stream(blocks: list[pa.Table], stages: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    """The Ray Data pipeline over (position, uri) blocks: encoded batches as they come."""
    import ray

    _quiet_ray()
    pipeline = (
        ray.data.from_arrow(blocks)
        .map_batches(
            _decode_block,
            batch_size=stages["rows"],
            batch_format="numpy",
            fn_kwargs=dict(preprocess=stages["preprocess"], side=stages["side"]),
            num_cpus=1,
        )
        .map_batches(
            EncodeActor,
            batch_size=stages["rows"],
            batch_format="numpy",
            fn_constructor_kwargs=stages["actor_args"],
            compute=ray.data.ActorPoolStrategy(size=stages["actors"]),
            num_gpus=stages["gpus_per_actor"],
            # A CPU actor leaves half a core's share to the decode tasks beside it. A dead actor is
            # restarted and its batch retried: Ray Data's default for actor pools.
            num_cpus=1 if stages["gpus_per_actor"] else 0.5,
        )
    )
    yield from pipeline.iter_batches(batch_size=None, batch_format="numpy")


def connect_ray(address: str = "auto") -> Any:
    """The `ray` module, connected: to the cluster at `address`, or (for "auto" without one) a local instance."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise ClipsearchError("--engine ray needs Ray Data: pip install 'clipsearch[ray]'") from err
    _quiet_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the core worker's C++ log lines on stderr
    options = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, logging_level=logging.ERROR)
    with _stderr_silenced():  # Ray's start-up lines; its failures still arrive as exceptions
        try:
            ray.init(address=address, **options)
        except ConnectionError as err:
            if address != "auto":
                raise ClipsearchError(f"cannot reach the Ray cluster at {address}: {err}".splitlines()[0]) from err
            ray.init(num_cpus=usable_cores(), **options)
        except (ValueError, RuntimeError) as err:
            raise ClipsearchError(f"cannot start Ray with --ray-address {address}: {err}".splitlines()[0]) from err
    return ray


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null (Ray's C++ code and the processes it starts write there directly)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _quiet_ray() -> None:
    """Ray's own progress bars and INFO lines would interleave with ours on stderr."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")  # advice on tuning, deprecations


def item_path(uri: str) -> str:
    """The file a uri's pixels are read from (a CIFAR uri: the archive's folder)."""
    return uri.partition(":")[2].rpartition("#")[0] if is_cifar_uri(uri) else uri


def check_workers_see(paths: list[str]) -> None:
    """Every alive Ray node stats these paths (a sample that this driver sees); one clear line if one cannot."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not paths:
        return
    stat_paths = ray.remote(num_cpus=0)(_missing)
    nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
    checks = [
        stat_paths.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(paths)
        for node in nodes
    ]
    for node, missing in zip(nodes, ray.get(checks)):
        if missing:
            raise ClipsearchError(
                f"the Ray workers cannot read {missing[0]} (node {node[:8]}): "
                "put the images on storage every node mounts at the same path"
            )


def _missing(paths: list[str]) -> list[str]:
    return [path for path in paths if not os.path.exists(path)]


def _decode_block(batch: dict[str, np.ndarray], preprocess: Callable, side: int) -> dict[str, np.ndarray]:
    """A Ray task: decode + preprocess one block of uris (a failed image: zero pixels and its error)."""
    decoded = [decode_one(str(uri), preprocess, side) for uri in batch["uri"]]
    shape = next((np.shape(pixels) for pixels, _, _ in decoded if pixels is not None), (3, side, side))
    pixels = np.zeros((len(decoded), *shape), np.float32)
    for row, (image, _, _) in enumerate(decoded):
        if image is not None:
            pixels[row] = np.asarray(image, np.float32)
    sizes = np.asarray([size or (0, 0) for _, size, _ in decoded], np.int64).reshape(-1, 2)
    return {
        "position": np.asarray(batch["position"], np.int64),
        "pixels": pixels,
        "width": sizes[:, 0],
        "height": sizes[:, 1],
        "error": np.asarray([error or "" for _, _, error in decoded], dtype=object),
    }


class EncodeActor:
    """A Ray actor: the model, loaded once from its spec on the backend the driver chose, encodes blocks."""

    def __init__(self, spec: dict[str, Any], backend: str, precision: str | None):
        self.encoder = load_encoder(ModelSpec.from_dict(spec), backend=backend, precision=precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch  # heavy: in the actor only

        ok = batch["error"] == ""
        vectors = np.zeros((len(ok), self.encoder.dim), np.float32)
        if ok.any():
            vectors[ok] = self.encoder.encode_image_tensors(torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])))
        return {key: batch[key] for key in ("position", "width", "height", "error")} | {"vector": vectors}


def _encoded_rows(batch: dict[str, np.ndarray]) -> list[Encoded]:
    rows: list[Encoded] = []
    for position, vector, width, height, error in zip(
        batch["position"], batch["vector"], batch["width"], batch["height"], batch["error"]
    ):
        if error:
            rows.append((int(position), None, None, str(error)))
        else:
            rows.append((int(position), np.asarray(vector, np.float32), (int(width), int(height)), None))
    return rows


def _one_line(err: BaseException) -> ClipsearchError:
    """A failure of the Ray run for the user: a worker's own ClipsearchError as it is (Ray wraps it in its
    own types), anything else as its innermost exception's first line."""
    while err.__cause__ is not None or getattr(err, "cause", None) is not None:
        err = err.__cause__ or err.cause  # type: ignore[attr-defined]
    if isinstance(err, ClipsearchError):
        return ClipsearchError(str(err).splitlines()[0])
    return ClipsearchError(f"the Ray run failed: {type(err).__name__}: {err}".splitlines()[0])
