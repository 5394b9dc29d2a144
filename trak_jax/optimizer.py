"""Optimizers (optax AdamW, Adafactor) built from a serialisable config.

The config is stored in the checkpoint so the optimizer state can be restored
into its exact structure, and so later stages know the end-of-training
learning rate (tail-patch steps with it).
"""

import dataclasses
from typing import Any

import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer and learning-rate schedule.

  Attributes:
    name: "adamw" or "adafactor".
    learning_rate: Peak learning rate.
    warmup_steps: Linear warm-up from 0 to the peak.
    total_steps: Length of the cosine decay (warm-up included).
    end_learning_rate_ratio: Final learning rate / peak.
    weight_decay: Decoupled weight decay.
    b1: AdamW first-moment decay.
    b2: AdamW second-moment decay.
    adafactor_decay_rate: Adafactor second-moment decay exponent.
    adafactor_momentum: Adafactor first-moment decay (None: no momentum).
    min_dim_size_to_factor: Adafactor factors a matrix's second moments when
      both its dims are at least this large.
    clip_norm: Global gradient-norm clip (0: none).
  """

  name: str = "adamw"
  learning_rate: float = 3e-3
  warmup_steps: int = 100
  total_steps: int = 1000
  end_learning_rate_ratio: float = 0.1
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.98
  adafactor_decay_rate: float = 0.8
  adafactor_momentum: float | None = None
  min_dim_size_to_factor: int = 32
  clip_norm: float = 1.0

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "OptimizerConfig":
    return cls(**values)

  @property
  def final_learning_rate(self) -> float:
    return self.learning_rate * self.end_learning_rate_ratio


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  """Linear warm-up, then cosine decay to the end learning rate."""
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=config.learning_rate,
    warmup_steps=config.warmup_steps,
    decay_steps=max(config.total_steps, config.warmup_steps + 1),
    end_value=config.final_learning_rate,
  )


def make_optimizer(
  config: OptimizerConfig, *, learning_rate: Any = None
) -> optax.GradientTransformation:
  """Builds the optax optimizer.

  Args:
    config: What to build.
    learning_rate: Overrides the schedule (e.g. a constant for tail-patch).

  Returns:
    The gradient transformation.

  Raises:
    ValueError: For an unknown optimizer name.
  """
  schedule = learning_rate_schedule(config)
  lr = schedule if learning_rate is None else learning_rate
  if config.name == "adamw":
    core = optax.adamw(
      lr, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay
    )
  elif config.name == "adafactor":
    core = optax.adafactor(
      lr,
      decay_rate=config.adafactor_decay_rate,
      min_dim_size_to_factor=config.min_dim_size_to_factor,
      multiply_by_parameter_scale=False,
      clipping_threshold=None,
      momentum=config.adafactor_momentum,
      weight_decay_rate=config.weight_decay or None,
    )
  else:
    raise ValueError(
      f"unknown optimizer {config.name!r}; expected 'adamw' or 'adafactor'"
    )
  if config.clip_norm:
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), core)
  return core
