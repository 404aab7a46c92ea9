"""Training from scratch or fine-tuning, the Zeiler & Fergus / Krizhevsky recipe as options.

``fit`` is one loop for one process or many (``torchrun`` -> DistributedDataParallel): SGD with momentum,
the learning rate lowered when the validation loss stops improving, optional paper initialization and
filter-RMS renormalization, random crops and flips (done by the dataset), a checkpoint after every epoch
(and every ``checkpoint_every`` steps), kept epochs for the feature-evolution figure, and resume.

Resume is exact: the sample order of an epoch is a seeded permutation of (seed, epoch), each sample's
augmentation is seeded by (seed, epoch, index), and the checkpoint holds the model, optimizer, scheduler,
the partial epoch's sums and the RNG states (dropout). So a run killed anywhere and restarted with the same
command ends with the same metrics as an uninterrupted one. Checkpoints hold only tensors and plain Python
values, are written atomically (temporary file, then rename) and loaded with ``weights_only=True``.

The modules, imports running downward (pyproject.toml's contract): ``loop`` (``fit``, ``evaluate``, the
distributed helpers and samplers); ``checkpoints`` (atomic saves, RNG states, run folders) and ``splits`` (class
subsets, held-out splits, shuffled labels); ``recipe`` (``TrainConfig``, the initializations, the smoke recipe).
Every public name is importable from ``cnnvis.training``; what reads an experiment's config (its datasets,
``train_variant``) is ``cnnvis.from_config``.
"""

from cnnvis.training.checkpoints import held_out_fingerprint, load_checkpoint, run_dir, save_atomic
from cnnvis.training.loop import (HISTORY_COLUMNS, KILL_ENV, EpochSampler, SeededSamples, distributed_context, evaluate,
                                  fit, is_main_process, select_trainable)
from cnnvis.training.recipe import (PAPER_EPOCHS, PAPER_KEEP_EPOCHS, TrainConfig, as_train_config, init_weights_,
                                    kaiming_init_, paper_init_, renormalize_filters_, scaled_keep_epochs, smoke_recipe)
from cnnvis.training.splits import (ShuffledLabels, best_epoch, keep_classes, largest_classes, random_split,
                                    split_held_out)

__all__ = [
    "held_out_fingerprint", "load_checkpoint", "run_dir", "save_atomic",
    "HISTORY_COLUMNS", "KILL_ENV", "EpochSampler", "SeededSamples", "distributed_context", "evaluate", "fit",
    "is_main_process", "select_trainable",
    "PAPER_EPOCHS", "PAPER_KEEP_EPOCHS", "TrainConfig", "as_train_config", "init_weights_", "kaiming_init_",
    "paper_init_",
    "renormalize_filters_", "scaled_keep_epochs", "smoke_recipe",
    "ShuffledLabels", "best_epoch", "keep_classes", "largest_classes", "random_split", "split_held_out",
]
