"""Training: a mesh-sharded, jitted train step, validation-based checkpoint selection, resumption.

The loss is the paper's sigmoid binary cross-entropy on the final score (eq. 4), optimised with
AdamW under a warm-up + cosine schedule. Batches are class-balanced (data/sampler.py) and split
over the mesh's data axes; parameters are placed by the config's sharding rules; the step
donates its state. The latest state is checkpointed for resumption, and the variables with the
best validation AP are kept for evaluation (checkpoint.py); a preemption notice (SIGTERM) saves
it at the next step boundary and stops the run (preemption.py).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from flax.training import train_state
from tqdm import tqdm

from agg_jax import (checkpoint, concatenated_update, cpu_defaults, data, evaluate, fileio,
                     models, preemption, sharding, train_log, weights)
from agg_jax.config_validation import require, require_fields
from agg_jax.metrics import compute_metrics

# Parameter counts the paper gives (section V, "Network Trimming").
PAPER_PARAMS = {"backbone": "about 24M", "head": "about 16M", "best projection": "about 0.32M"}


class TrainState(train_state.TrainState):
  batch_stats: Any
  rng: jax.Array


TRAIN_FIELDS = ("batch_size", "eval_batch_size", "num_steps", "learning_rate", "end_lr_factor",
                "warmup_steps", "weight_decay", "grad_clip_norm", "log_every", "eval_every",
                "checkpoint_every")


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_config(config: ml_collections.ConfigDict, device_count: int) -> None:
  """Raises ConfigError naming the first unusable `config.train` field (or `config.seed`)."""
  t = config.train
  require_fields(t, "train", TRAIN_FIELDS, "training")
  require(isinstance(config.seed, int), "seed", config.seed, "must be a whole number")
  for key in ("batch_size", "eval_batch_size", "num_steps", "log_every", "eval_every",
              "checkpoint_every"):
    require(isinstance(t[key], int) and t[key] > 0, f"train.{key}", t[key],
            "must be a whole number > 0")
  data.check_batch_size(t.batch_size)
  divisor = sharding.batch_divisor(config.mesh, device_count)
  for key in ("batch_size", "eval_batch_size"):
    require(t[key] % divisor == 0, f"train.{key}", t[key],
            f"must be a multiple of {divisor}, the devices the batch is split over")
  require(_number(t.learning_rate) and t.learning_rate > 0, "train.learning_rate",
          t.learning_rate, "must be > 0")
  for key in ("weight_decay", "warmup_steps", "end_lr_factor"):
    require(_number(t[key]) and t[key] >= 0, f"train.{key}", t[key], "must be >= 0")
  require(_number(t.grad_clip_norm) and t.grad_clip_norm > 0, "train.grad_clip_norm",
          t.grad_clip_norm, "must be > 0")


def create_optimizer(
    config: ml_collections.ConfigDict
) -> optax.GradientTransformation | concatenated_update.Concatenated:
  """AdamW with gradient clipping under a warm-up + cosine schedule. Where the parameters are
  replicated, its update runs on them concatenated (concatenated_update: the same arithmetic,
  a step that traces, compiles and starts faster); sharded, parameter by parameter."""
  t = config.train
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, t.learning_rate, warmup_steps=t.warmup_steps,
      decay_steps=max(t.num_steps, t.warmup_steps + 1), end_value=t.learning_rate * t.end_lr_factor)

  def adamw(decay_mask):
    return optax.chain(optax.clip_by_global_norm(t.grad_clip_norm),
                       optax.adamw(schedule, weight_decay=t.weight_decay, mask=decay_mask))

  decayed = lambda param: param.ndim > 1  # none on biases and batch-norm parameters (1-D)
  if sharding.shards_parameters(config.sharding_rules):
    return adamw(lambda params: jax.tree.map(decayed, params))
  return concatenated_update.concatenated(adamw, decayed)


def variables_of(state: TrainState) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def load_pretrained(config: ml_collections.ConfigDict) -> dict | None:
  """The backbone variables `model.init_from` names (written by `agg_jax.weights convert`)."""
  if not config.model.init_from:
    return None
  variables = weights.load_checked(config.model.init_from, config.model.name)
  print(f"backbone initialised from {config.model.init_from}", flush=True)
  return variables


def init_state(model: nn.Module, tx: optax.GradientTransformation, config, mesh, image_shape,
               pretrained: dict | None = None):
  """The initial state, created directly with its shardings; returns (state, shardings).

  `pretrained` backbone variables (`load_pretrained`) replace the random backbone initialisation.
  What compiling the initialisation used goes back to the system (about 1 GB for
  EfficientNetV2-S; cpu_defaults.release_free_memory), once the compiled function is gone.
  """
  options = cpu_defaults.run_once_compiler_options(mesh.devices.flat)
  state, shardings = _initialised(model, tx, config, mesh, image_shape, pretrained, options)
  jax.block_until_ready(state)  # until it has run, its buffers are not free
  cpu_defaults.release_free_memory()
  return state, shardings


def _initialised(model, tx, config, mesh, image_shape, pretrained, compiler_options):
  """(state, shardings); `compiler_options` only where this is not traced inside another
  function (jax.jit takes them at the top level alone)."""
  def init(rng, pretrained):
    init_rng, state_rng = jax.random.split(rng)
    variables = model.init(init_rng, jnp.zeros((1, *image_shape), jnp.uint8), train=False)
    if pretrained is not None:
      variables = weights.restore_into(variables, pretrained)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}), rng=state_rng)

  rng = jax.random.PRNGKey(config.seed)
  abstract_state = jax.eval_shape(init, rng, pretrained)
  shardings = sharding.param_shardings(abstract_state, mesh, config.sharding_rules)
  initialise = jax.jit(init, out_shardings=shardings, compiler_options=compiler_options)
  return initialise(rng, pretrained), shardings


def abstract_state(config, mesh):
  """(shapes of the initial train state, its shardings) as `init_state` makes them, without
  allocating or computing anything (memory planning: bench/bench_sharding.py)."""
  made = {}

  def init():
    state, made["shardings"] = _initialised(
        models.from_config(config.model), create_optimizer(config), config, mesh,
        data.image_shape(config.data), pretrained=None, compiler_options={})
    return state

  return jax.eval_shape(init), made["shardings"]


def bce_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Eq. 4: binary cross-entropy of sigmoid(s_final) against the label (1 = fake)."""
  return optax.sigmoid_binary_cross_entropy(logits, labels).mean()


def make_train_step(mesh, state_shardings):
  """The jitted, donating train step: (state, batch) -> (state, metrics), compiled with
  cpu_defaults.training_compiler_options."""

  def step_fn(state: TrainState, batch: dict):
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      (logits, _), updates = state.apply_fn(
          {"params": params, "batch_stats": state.batch_stats}, batch["images"], train=True,
          mutable=["batch_stats"], rngs={"dropout": dropout_rng})
      return bce_loss(logits, batch["labels"]), (logits, updates)

    # Traced under the mesh, so that layers whose gradient is a custom CPU kernel sum each
    # device's images there (models.cpu_kernels) instead of gathering the batch.
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])
    accuracy = jnp.mean((logits > 0) == (batch["labels"] > 0.5))
    return state, {"loss": loss, "accuracy": accuracy, "grad_norm": optax.global_norm(grads)}

  batch_sharding = sharding.batch_sharding(mesh)
  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0,
                 compiler_options=cpu_defaults.training_compiler_options(mesh.devices.flat))


def compiled_train_step(mesh, state_shardings, state, batch):
  """`make_train_step`'s step compiled ahead of time for arguments like (state, batch). What
  compiling used goes back to the system before the step first runs, so that the step's own
  buffers (gigabytes) do not come on top of it (cpu_defaults.release_free_memory)."""
  compiled = make_train_step(mesh, state_shardings).lower(state, batch).compile()
  cpu_defaults.release_free_memory()
  return compiled


def log_param_counts(params) -> dict:
  counts = models.param_counts(params)
  lines = [f"parameters: backbone {counts['backbone']:,} (paper: {PAPER_PARAMS['backbone']}), "
           f"analysis part {counts['head']:,} (paper: {PAPER_PARAMS['head']}), "
           f"total {counts['total']:,}"]
  if "projections" in counts:
    lines.append(f"projections: {len(counts['projections'])}, largest "
                 f"{counts['largest_projection']:,}, smallest {counts['smallest_projection']:,} "
                 f"(paper's best single projection: {PAPER_PARAMS['best projection']})")
  for line in lines:
    logging.info(line)
    print(line, flush=True)
  return counts


def _checkpointed(state: TrainState) -> TrainState:
  """The state as checkpoints keep it: the optimizer's state per parameter, however the
  optimizer runs (concatenated_update), so a run resumes whatever its sharding rules."""
  if not isinstance(state.tx, concatenated_update.Concatenated):
    return state
  return state.replace(opt_state=state.tx.per_parameter_state(state.opt_state, state.params))


def _from_checkpoint(state: TrainState) -> TrainState:
  """The inverse of `_checkpointed`."""
  if not isinstance(state.tx, concatenated_update.Concatenated):
    return state
  return state.replace(opt_state=state.tx.grouped_state(state.opt_state, state.params))


def validate(predict, variables, split, config, mesh) -> float:
  scores = evaluate.score_split(predict, variables, split, config.train.eval_batch_size, mesh)
  return compute_metrics(split.labels, scores)["frame"]["ap"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, keeps the best checkpoint by validation AP, then scores every test set."""
  fileio.path(workdir).mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh(config.mesh)
  dataset = data.load(config.data)
  image_shape = data.image_shape(config.data)
  model = models.from_config(config.model)
  state, state_shardings = init_state(model, create_optimizer(config), config, mesh, image_shape,
                                      load_pretrained(config))
  log_param_counts(state.params)

  ckpts = checkpoint.RunCheckpoints(workdir)
  start = ckpts.latest_step() or 0
  if start:
    state = _from_checkpoint(ckpts.restore_latest(checkpoint.abstract(_checkpointed(state))))
    print(f"resumed from step {start} in {workdir}", flush=True)
  best_ap = ckpts.best_metric()

  augment = data.augmentation(config.data)
  batches = data.BalancedBatches(dataset.train, config.train.batch_size, config.seed,
                                 flip=augment.flip, mix=dataset.train_mix,
                                 augment=dataclasses.replace(augment, flip=False))
  train_step = None  # compiled for the first batch
  predict = evaluate.make_predict_fn(model, mesh)
  log = train_log.TrainLog(workdir, start, enabled=jax.process_index() == 0)
  t = config.train
  progress = tqdm(range(start, t.num_steps), initial=start, total=t.num_steps, unit="step",
                  disable=jax.process_index() != 0, desc="train")
  stream = data.train_stream(batches, start, t.num_steps, jax.process_index(),
                             jax.process_count(), data.workers(config.data))
  try:
    with preemption.Preemption() as notice:
      for step, local in zip(progress, stream):
        batch = sharding.global_batch(local, mesh)
        if train_step is None:
          train_step = compiled_train_step(mesh, state_shardings, state, batch)
        state, metrics = train_step(state, batch)
        done = step + 1
        if done % t.log_every == 0 or done == t.num_steps:
          metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
          progress.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.3f}")
          log.write(done, **metrics)
        if done % t.eval_every == 0 or done == t.num_steps:
          val_ap = validate(predict, variables_of(state), dataset.validation, config, mesh)
          log.write(done, val_ap=val_ap)
          progress.write(f"step {done}: validation AP {val_ap:.4f}")
          if best_ap is None or val_ap > best_ap:
            best_ap = val_ap
            ckpts.save_best(done, variables_of(state), val_ap)
        stop = notice.reached(done)
        if done % t.checkpoint_every == 0 or done == t.num_steps or stop:
          ckpts.save_latest(done, _checkpointed(state))
        if stop:
          ckpts.wait()
          raise preemption.Preempted(done, workdir, notice.cause)
  finally:  # also on a preemption or an error: what was saved is complete, the workers end
    progress.close()
    getattr(stream, "close", lambda: None)()  # grain's worker processes
    log.close()
    ckpts.wait()

  variables = ckpts.restore_best(checkpoint.abstract(variables_of(state)))
  ckpts.close()
  print(f"best validation AP {best_ap:.4f}; scoring {len(dataset.test)} test sets", flush=True)
  return evaluate.evaluate_dataset(predict, variables, dataset, config, workdir, mesh)
