"""Training: one run from its configuration to its record in the store, and the faster ways to train many.

- ``config``: ``RunConfig``, everything that defines a run; its hash names the run.
- ``command``: the ``atlib train`` flags, and the command line that trains a given ``RunConfig``.
- ``store``: ``RunStore``, runs on disk (atomic writes, checkpoints, records, provenance).
- ``loop``: the one epoch loop, for a single run and for cohorts (what differs is the members object).
- ``engine``: ``train(config)``, one run: model, objective, optimiser, step, resume; through ``loop``.
- ``devices``, ``sources``, ``teachers``: device and execution paths; a run's data; its teacher and run id.
- ``steps``: the training step captured as a CUDA graph (``StepRunner``).
- ``grouped_wrn``: many WRN students as one grouped network.
- ``grouped_nin``: Table 3's BN-free NIN runs as one grouped network, double backpropagation included.
- ``cohort_steps``, ``cohort_losses``: a cohort's step and losses.
- ``cohorts``: ``train_cohort``, ordinary runs trained as one grouped network (families: WRN, BN-free NIN).
- ``concurrent``: single runs trained at once on their own CUDA streams.
- ``distributed``: one run over several GPUs (torchrun).
- ``claims``: claims on runs, so that several processes share one store.
- ``deadline``: stop at an epoch boundary before a deadline (GPU windows).

It uses the method (``atlib.models``, ``atlib.attention``, ``atlib.losses``, ``atlib.objective``, ``atlib.methods``)
and ``atlib.data``; nothing here knows the paper's tables (``atlib.paper``).
"""
