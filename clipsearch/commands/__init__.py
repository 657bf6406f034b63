"""Command groups beyond index/search; each module adds its commands to `cli.app` when imported."""

from importlib import import_module

# One module per feature, so that features stay separate (train, zeroshot, ...).
COMMAND_MODULES: list[str] = ["demo", "retrieval", "zeroshot", "tui", "probe", "train"]


def register_all() -> None:
    for name in COMMAND_MODULES:
        import_module(f"{__name__}.{name}")
