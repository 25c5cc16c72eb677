"""entrodec.search: inference-time search over reasoning steps.

Particle filtering (:class:`ParticleFilter`), entropic particle filtering with annealing and look-ahead
(:class:`EntropicParticleFilter`), best-of-N and self-consistency, with rewards from a Python verifier,
a Hugging Face process reward model, or the policy's own certainty.

>>> from entrodec.decoding import load_model                                # doctest: +SKIP
>>> from entrodec.search import EntropicParticleFilter, SelfCertainty       # doctest: +SKIP
>>> model, tok = load_model()                                               # doctest: +SKIP
>>> EntropicParticleFilter(model, tok, reward=SelfCertainty(), n_particles=8).run("Add 3, 4 and 2.").answer  # doctest: +SKIP
"""

from .annealing import Annealing, effective_sample_size, entropy_temperature, ess_temperature
from .answers import last_number, vote
from .particle_filter import EntropicParticleFilter, ParticleFilter, reward_logit
from .resampling import multinomial, systematic
from .result import ParticleTrace, SearchResult
from .rewards import ProcessRewardModel, Reward, SelfCertainty, StepVerifier, as_reward
from .samples import BestOfN, SelfConsistency

__all__ = [
    "ParticleFilter", "EntropicParticleFilter", "BestOfN", "SelfConsistency", "SearchResult", "ParticleTrace",
    "Reward", "StepVerifier", "ProcessRewardModel", "SelfCertainty", "as_reward", "Annealing", "ess_temperature",
    "entropy_temperature", "effective_sample_size", "systematic", "multinomial", "reward_logit", "last_number", "vote",
]
