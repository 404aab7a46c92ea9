"""Entry point: ``python run.py experiment=<name> [overrides]`` (``--multirun`` for sweeps).

Configs live in conf/ (groups experiment/, model/, dataset/); each experiment is experiments/<name>.py.
"""

import importlib
import sys

from cnnvis.threads import default_passive_wait

default_passive_wait()  # before anything imports torch: OpenMP reads OMP_WAIT_POLICY once, when it loads

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from cnnvis.config import register_configs  # noqa: E402
from experiments import experiment_configs, experiment_model_kinds  # noqa: E402

register_configs(experiment_configs())


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from cnnvis.runner import run_experiment

    run_experiment(cfg, importlib.import_module(f"experiments.{cfg.experiment.name}").main, experiment_model_kinds())


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the runner has removed the run's staging folder; nothing was moved into place
        print("interrupted: nothing written, earlier results are as they were", file=sys.stderr)
        sys.exit(130)
