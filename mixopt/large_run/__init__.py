"""The large run: one model trained on the corpus under an online mixer (`mixopt train`).

    settings = load_train_config("configs/train.yaml")                  # mixopt.config.TrainSettings
    rec = Recommendation.from_json("runs/demo", label="mixture")        # the static study's mixture
    space = run_space(settings, rec.domains, corpus.trainable_tokens(), rec.payload)
    mixer = build_mixer(settings, rec.domains, rec.proportions, method="static", space=space)
    result = train_run(settings, rec.domains, mixer, "runs/train")     # also train_result.json

    mixers.py      the run's space (the study's bounds and caps at this run's tokens) and its mixer
    loop.py        the loop: ask, train n steps, evaluate, tell, log, checkpoint; resumable
    checkpoint.py  model, optimizer, mixer and batch source saved as arrays and JSON
    actor.py       one mixer shared by several training workers through a Ray named actor

torch is imported inside the functions that train, so importing this package stays light.
"""

from mixopt.large_run.actor import MixerService, RemoteMixer, mixer_actor
from mixopt.large_run.loop import LOG_NAME, RESULT_NAME, plot_weights, train_run
from mixopt.large_run.mixers import align_weights, build_mixer, run_space

__all__ = ["train_run", "build_mixer", "run_space", "align_weights", "plot_weights", "MixerService",
           "RemoteMixer", "mixer_actor", "LOG_NAME", "RESULT_NAME"]
