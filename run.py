"""Entry point: ``python run.py experiment=<name> [overrides]`` (``--multirun`` for sweeps).

Configs live in conf/ (groups experiment/, model/, dataset/); each experiment is experiments/<name>.py.
"""

import sys

import hydra
from omegaconf import DictConfig

from cnnvis.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from cnnvis.runner import run_experiment

    run_experiment(cfg)


if __name__ == "__main__":
    sys.exit(main())
