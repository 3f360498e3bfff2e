"""The online mixers by name: `create` a new one, `load_mixer` one from its saved state.

Below both the package's front (mixopt/online/__init__.py) and the Schedule, which creates and
loads the mixers of its phases, so that neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping

from mixopt.errors import InputError
from mixopt.online.aioli import AioliMixer
from mixopt.online.auto import AutoMixer
from mixopt.online.base import OnlineMixer, read_state
from mixopt.online.baselines import StaticMixer, StratifiedMixer
from mixopt.online.doremi import DoReMiMixer

_REGISTRY = {cls.method: cls for cls in (AioliMixer, AutoMixer, DoReMiMixer, StaticMixer, StratifiedMixer)}
METHODS = tuple(sorted(_REGISTRY))


def create(method: str, domains, steps, prior=None, seed=0, **options) -> OnlineMixer:
    """A new online mixer; see mixopt/online/__init__.py for the protocol and METHODS."""
    if not isinstance(method, str) or method not in _REGISTRY:
        raise InputError(f"method must be one of {list(METHODS)}, got {method!r}")
    return _REGISTRY[method](domains, steps, prior=prior, seed=seed, **options)


def load_mixer(source) -> OnlineMixer:
    """One mixer (not a Schedule) from `state_dict()` output or from the JSON file `save()` wrote."""
    state = read_state(source)
    method = state.get("method")
    if method not in _REGISTRY:
        raise InputError(f"state: unknown method {method!r}")
    try:
        options = state["options"]
        if not isinstance(options, Mapping):
            raise TypeError("options is not a mapping")
        mixer = create(method, state["domains"], state["steps"], prior=state["prior"], seed=state["seed"],
                       min_weights=state["min_weights"], max_weights=state["max_weights"],
                       objective=state["objective"], **options)
    except (KeyError, TypeError) as exc:
        raise InputError(f"state: malformed mixer state ({type(exc).__name__}: {exc})") from exc
    mixer.load_state_dict(state)
    return mixer
