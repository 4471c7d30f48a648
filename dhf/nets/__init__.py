"""Built-in models, each returned as a :class:`dhf.model.ModelSpec`, and their inits.

- :func:`feedforward` — feed-forward nets with arbitrary forward connectivity;
- :func:`recurrent` — stacked tanh-RNN / LSTM layers with a linear readout;
- :func:`rnn`, :func:`mlp` — theano-hf's one-layer tanh RNN (its memorisation job's
  model) and a plain fully connected net (:mod:`dhf.nets.classic`);
- :mod:`dhf.nets.init` — seeded initialisations (sparse, gaussian, uniform, orthogonal,
  spectral-radius rescaling).
"""
from dhf.nets import init
from dhf.nets.classic import mlp, rnn
from dhf.nets.feedforward import feedforward
from dhf.nets.recurrent import recurrent

__all__ = ["feedforward", "recurrent", "rnn", "mlp", "init"]
