"""What one run loaded, for its run.json. ``cnnvis.runner.run_experiment`` makes a ``RunRecord`` for each run and
hands it to the experiment's ``main(cfg, out, record)``, which passes it to whatever decodes images or builds a
configured model (``cnnvis.from_config``, ``cnnvis.data.decode_to_cache``); nothing is recorded in module state."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class RunRecord:
    datasets: list[dict] = field(default_factory=list)  # every image set decoded: name, root, images, skipped
    weights: list[dict] = field(default_factory=list)  # every model built from a name: model, weights

    def add_dataset(self, name: str, paths: list[str], images: int, skipped: int) -> None:
        """An image set decoded from ``paths`` (readable or not): ``images`` of them kept, ``skipped`` unreadable."""
        self.datasets.append({"name": name, "root": os.path.commonpath(paths) if paths else None, "images": images,
                              "skipped": skipped})
