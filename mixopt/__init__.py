"""mixopt: data-mixture optimization for language-model pretraining.

    space = mixopt.MixtureSpace(domains, tokens, target_tokens, max_epochs)
    result = mixopt.optimize(space, evaluate, budget=128, objective=None, seed=0)
    model = mixopt.fit(X, y, seed=0)

No torch is imported here: the library is numpy, polars and LightGBM; torch lives in workers/.
"""

from mixopt import online  # mixopt.online.create: the online mixers
from mixopt.errors import ConfigError, DataError, InputError, MixoptError, StoreError, StudyError
from mixopt.space import MixtureSpace
from mixopt.study import Result, Study, optimize
from mixopt.surrogate import fit

__version__ = "0.1.0"

__all__ = [
    "MixtureSpace", "Study", "online", "pipeline", "Result", "optimize", "fit",
    "MixoptError", "ConfigError", "InputError", "DataError", "StoreError", "StudyError",
]


def __getattr__(name: str):
    # mixopt.pipeline pulls in Ray and the CLI's reporting: imported on first use only
    if name == "pipeline":
        import importlib

        return importlib.import_module("mixopt.pipeline")
    raise AttributeError(f"module 'mixopt' has no attribute {name!r}")
