"""SGD on toy landscapes whose degeneracy is known exactly (the ``toy_landscapes`` study).

Regression models ``y = u(w)·x + noise`` whose features ``u`` are monomials of one or two
weights, so that the population loss near the true parameter ``w* = 0`` is ``½ w^(2k)``
(``line``), ``½ (w1^(2k1) + w2^(2k2))`` (``sum``) or ``½ w1^(2k1) w2^(2k2)`` (``product``).
The modules, each small and pure:

* :mod:`~critperiods.toy.landscapes` — the models, their finite data sets, losses and
  exact learning coefficients, and the ``nn.Module`` the λ̂ estimator samples;
* :mod:`~critperiods.toy.sgd` — minibatch SGD on thousands of trajectories at once;
* :mod:`~critperiods.toy.posterior` — the tempered posterior on a grid and its distances
  to a set of SGD endpoints;
* :mod:`~critperiods.toy.noise` — SGD noise covariance against the Hessian;
* :mod:`~critperiods.toy.measure` — everything measured on one landscape, as a Dataset;
* :mod:`~critperiods.toy.cube` — the landscapes merged into ``toy_cube.nc``, and its summary;
* :mod:`~critperiods.toy.plots` — the figures.

See ``docs/toy_landscapes.md`` for the questions, the protocol and the results.
"""
