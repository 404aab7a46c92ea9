"""Experiment scripts: ``experiments/<name>.py`` declares ``Config`` (its typed options) and
``main(cfg, out) -> metrics``; ``conf/experiment/<name>.yaml`` sets its defaults."""

import importlib
from pathlib import Path


def experiment_names() -> list[str]:
    return sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))


def experiment_configs() -> dict[str, type]:
    """Each experiment's ``Config`` class by name, for ``cnnvis.config.register_configs``."""
    return {name: importlib.import_module(f"experiments.{name}").Config for name in experiment_names()}


def experiment_model_kinds() -> dict[str, tuple[list[str] | None, dict[str, str]]]:
    """Each experiment's ``MODEL_KINDS`` and ``OTHER_MODEL_KEYS`` by name, for ``cnnvis.config.check_model_kind``."""
    modules = {name: importlib.import_module(f"experiments.{name}") for name in experiment_names()}
    return {name: (m.MODEL_KINDS, getattr(m, "OTHER_MODEL_KEYS", {})) for name, m in modules.items()}
