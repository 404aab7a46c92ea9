"""Experiment scripts: ``experiments/<name>.py`` declares ``Config`` (its typed options) and
``main(cfg, out, record) -> metrics`` (``out``: the run's ``cnnvis.results.Results``; ``record``: its
``cnnvis.run_record.RunRecord``, passed to whatever loads data or weights); ``conf/experiment/<name>.yaml`` sets its
defaults."""

import importlib
from pathlib import Path


def experiment_names() -> list[str]:
    return sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))


def experiment_modules() -> dict:
    return {name: importlib.import_module(f"experiments.{name}") for name in experiment_names()}


def experiment_configs() -> dict[str, type]:
    """Each experiment's ``Config`` class by name, for ``cnnvis.config.register_configs``."""
    return {name: m.Config for name, m in experiment_modules().items()}


def experiment_model_kinds() -> dict:
    """Each experiment's ``MODEL_KINDS`` and ``OTHER_MODEL_KEYS`` by name (``cnnvis.config.ExperimentModelKinds``),
    for ``cnnvis.config.check_model_kind``."""
    return {name: (m.MODEL_KINDS, getattr(m, "OTHER_MODEL_KEYS", {})) for name, m in experiment_modules().items()}
